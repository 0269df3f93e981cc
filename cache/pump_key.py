"""What determines a pump job's reply, as a digest (pure).

A pump job (protocol 3) is compiled from the client's own files at their own paths,
in the client's working directory, with the server's system headers: nothing is
renamed, so its object, warnings and dependency file are a function of

- the compiler (its identity, which :func:`cache.keys.cache_key` adds),
- the system headers' fingerprint the farm routes it by (every file under the
  compiler's system include directories, by path and content: server/pump_headers.py),
- the protocol, the working directory and the command line, every argument as typed
  (``-o`` names the dependency file's target, ``-I`` values are the client's paths),
- and every file the request carries: its name, and its content or link target.

The key is exact: a tree checked out elsewhere is a miss (its paths are in the debug
info, the dependency file and the warnings). Jobs that :func:`cache.keys.why_not_cacheable`
refuses are not cached, nor any whose files or ``-D`` values name ``__DATE__``,
``__TIME__`` or ``__TIMESTAMP__``, line splices taken out (the server's preprocessor
expands them: a hit would hand out another compile's time), as ccache's direct mode
decides; a macro that pastes one together (``__ ## TIME ## __``) is not seen, as it is
not by ccache. The include server's directory markers count only where they can
change the compile (:func:`markers_matter`).
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from typing import Any

from cache.keys import TIME_MACROS, JobDigest, why_not_cacheable
from wire.events import PumpEntry, PumpRequest
from wire.pump import MARKER

_CONTEXT = b"distlb-pump-key-v1\0"
_MARKER_SUFFIX = "/" + MARKER
_MARKER_BYTES = MARKER.encode()
_DOTDOT = re.compile(rb"(?<!\.)\.\.(?!\.)")
"""Two dots, not three (``...`` is C's variadic and C++'s pack)."""
_COMPUTED = re.compile(
    rb"(?:#[ \t]*(?:include|include_next|import)|__has_include(?:_next)?[ \t]*\()[ \t]*[^\"< \t]"
)
"""An ``#include`` (or ``__has_include``) whose name a macro makes: anything but a
written ``"name"`` or ``<name>``."""
_OPTION_PREFIX = re.compile(r"^-[A-Za-z_-]*=?")
_MARKERS_MATTER = ("missing-include-dirs", "-iprefix", "-iwithprefix", "sysroot")
"""In an argument, what makes an empty directory matter: a warning (or, with ``-Werror=``,
an error) for each missing ``-I`` directory (a twenty-second review); a prefix that a
leading ``..`` goes up out of (refused by the judge today)."""
_SPLICE = re.compile(rb"(?:\\|\?\?/)[ \t\f\v]*(?:\r\n|\r|\n)")
"""A line splice (a backslash or the ``??/`` trigraph, blanks, a line end), which the
preprocessor removes before it reads a name: ``__TI\\`` and ``ME__`` on the next line are
``__TIME__`` (a twenty-first review)."""


def _field(h: Any, data: bytes) -> None:
    h.update(len(data).to_bytes(8, "big"))
    h.update(data)


def _text(value: str) -> bytes:
    return value.encode("utf-8", "surrogateescape")


def why_not_cacheable_pump(request: PumpRequest, headers: str) -> str | None:
    """None when the pump job may be cached with the system headers ``headers``, else
    why not."""
    if not headers:
        return "its servers report no system headers' fingerprint"
    why = why_not_cacheable(request.argv)
    if why is not None:
        return why
    texts = [
        *(_SPLICE.sub(b"", e.body) for e in request.entries if e.link is None and e.body),
        *(_text(a) for a in request.argv),
    ]
    for macro in TIME_MACROS:
        if any(macro in text for text in texts):
            return f"{macro.decode()}: its value is the time of the compile"
    return None


def _is_marker(entry: PumpEntry) -> bool:
    return entry.link is None and not entry.body and entry.name.endswith(_MARKER_SUFFIX)


def _leading_ups_only(arg: str) -> bool:
    """Whether every ``..`` in ``arg`` leads a relative path (``-I../include``,
    ``../src/a.c``): from the working directory, up through its ancestors only."""
    value = _OPTION_PREFIX.sub("", arg, count=1)
    parts = value.split("/")
    ups = 0
    while ups < len(parts) and parts[ups] == "..":
        ups += 1
    return ".." not in parts[ups:] and _DOTDOT.search(_text(value.replace("..", "", ups))) is None


def markers_matter(request: PumpRequest) -> bool:
    """Whether the directories the include server's markers make (``NAME/`` +
    :data:`wire.pump.MARKER`, an empty file: "this directory exists", for an
    ``#include "foo/../bar"``) can change the compile. An empty directory holds no file
    to include: it matters only to a path that goes up out of it (``foo/..``), or to a
    source that asks for the marker itself. The include server sends a marker for every
    directory it has seen in its run, whatever the job, so the markers differ between
    two builds of one tree with ``make -j``: left out of the key unless a ``..`` can
    reach past one (any ``..`` in a file or a computed ``#include``/``__has_include``
    in one, which a macro could make go up; in an argument, anything but leading
    ``..`` of a relative path, which goes up from the working directory), or a file
    names the marker, or missing ``-I`` directories are warned of."""
    for arg in request.argv:
        if any(word in arg for word in _MARKERS_MATTER) or (
            ".." in arg and not _leading_ups_only(arg)
        ):
            return True
    for entry in request.entries:
        if entry.link is not None or not entry.body:
            continue
        text = _SPLICE.sub(b"", entry.body)
        if _DOTDOT.search(text) or _COMPUTED.search(text) or _MARKER_BYTES in text:
            return True
    return False


def pump_digest(request: PumpRequest, headers: str) -> JobDigest:
    """The digest of everything that determines ``request``'s reply with the system
    headers ``headers`` (the compiler's identity is added by the key): the markers
    only when they can matter (:func:`markers_matter`), and then whether the working
    directory is one of the tree's. Blocking for a big request (a hash over every
    body): call it off the loop then."""
    h = hashlib.sha256(_CONTEXT)
    _field(h, b"%d" % request.protocol)
    _field(h, _text(headers))
    _field(h, _text(request.cwd))
    h.update(len(request.argv).to_bytes(8, "big"))
    for arg in request.argv:
        _field(h, _text(arg))
    entries = sorted(request.entries, key=lambda e: e.name)  # (names are unique: checked)
    if not markers_matter(request):
        made = {e.name.removesuffix(_MARKER_SUFFIX) or "/" for e in entries if _is_marker(e)}
        shown = {posixpath.dirname(e.name) for e in entries if not _is_marker(e)}
        cwd_made = request.cwd in made or any(
            d == request.cwd or d.startswith(request.cwd.rstrip("/") + "/") for d in shown
        )
        _field(h, b"markers left out; cwd %d" % cwd_made)
        entries = [e for e in entries if not _is_marker(e)]
    else:
        _field(h, b"markers kept")
    h.update(len(entries).to_bytes(8, "big"))
    for entry in entries:
        _field(h, _text(entry.name))
        if entry.link is not None:
            _field(h, b"L" + _text(entry.link))
        else:
            _field(h, b"F" + hashlib.sha256(entry.body).digest())
    return JobDigest(exact=h.digest(), rule="pump")


def cacheable_digest(request: PumpRequest, headers: str) -> JobDigest | None:
    """:func:`pump_digest`, or None when the job may not be cached
    (:func:`why_not_cacheable_pump`). Blocking for a big request: off the loop then."""
    if why_not_cacheable_pump(request, headers) is not None:
        return None
    return pump_digest(request, headers)
