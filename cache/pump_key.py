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
``__TIME__`` or ``__TIMESTAMP__`` (the server's preprocessor expands them: a hit would
hand out another compile's time), as ccache's direct mode decides; a macro that pastes
one together (``__ ## TIME ## __``) is not seen, as it is not by ccache.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from cache.keys import TIME_MACROS, JobDigest, why_not_cacheable
from wire.events import PumpRequest

_CONTEXT = b"distlb-pump-key-v1\0"


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
    for macro in TIME_MACROS:
        texts: Iterable[bytes] = (
            *(e.body for e in request.entries if e.link is None),
            *(_text(a) for a in request.argv),
        )
        if any(macro in text for text in texts):
            return f"{macro.decode()}: its value is the time of the compile"
    return None


def pump_digest(request: PumpRequest, headers: str) -> JobDigest:
    """The digest of everything that determines ``request``'s reply with the system
    headers ``headers`` (the compiler's identity is added by the key). Blocking for a
    big request (a hash over every body): call it off the loop then."""
    h = hashlib.sha256(_CONTEXT)
    _field(h, b"%d" % request.protocol)
    _field(h, _text(headers))
    _field(h, _text(request.cwd))
    h.update(len(request.argv).to_bytes(8, "big"))
    for arg in request.argv:
        _field(h, _text(arg))
    entries = sorted(request.entries, key=lambda e: e.name)  # (names are unique: checked)
    h.update(len(entries).to_bytes(8, "big"))
    for entry in entries:
        _field(h, _text(entry.name))
        if entry.link is not None:
            _field(h, b"L" + _text(entry.link))
        else:
            _field(h, b"F" + hashlib.sha256(entry.body).digest())
    return JobDigest(exact=h.digest(), rule="pump")
