"""A hit's warnings, made to name the requesting client's files (pure, bounded).

An entry found under a key whose paths were normalised was compiled from another
checkout: its stderr names that checkout's files (``/home/alice/p/a.c:3:5: warning:``).
Both texts' line markers name their files in the same order (the key covers which
marker names which path), so the stored paths map one to one onto the requester's.
:func:`rewrite` replaces a stored path where a diagnostic names a location: at the start
of a line (after any colour escapes), after ``In file included from``, a continuation's
``from``, ``In module ... imported from`` and ``inlined from ... at``, and only when it
is followed by ``:``. If a stored path that differs from the requester's is left
anywhere else (a message quoting it, a JSON or SARIF diagnostic, a caret line), the
warnings cannot be mapped and the hit is not taken (:class:`Unmappable`): the job is
compiled.

Work is linear in the stderr: each line is looked at from a few places, each a few
``:`` at most, each a dictionary lookup; what is left is searched once per distinct
changed directory (a changed checkout is usually one), and the whole is refused when
that would cost more than :data:`MAX_WORK_BYTES`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

MAX_PATH_BYTES = 4096
"""How far into a line places where a path may start are looked for."""
MAX_COLONS = 8
"""``:`` tried after a place where a path may start (a path may hold a few)."""
MAX_WORK_BYTES = 64 * 1024 * 1024
"""Bytes searched at most for stored paths left unmapped (stderr times the number of
distinct changed directories), beyond which a hit is not taken."""
_ESCAPES = re.compile(rb"(?:\x1b\[[0-9;]*[A-Za-z])*")
_PLACES = re.compile(rb"In file included from |^[ \t]+from | imported from | at ")


class Unmappable(Exception):
    """The stored warnings name a path that cannot be mapped to the requester's."""


def rewrite(stderr: bytes, stored: Sequence[bytes], requested: Sequence[bytes]) -> bytes:
    """``stderr`` with each of ``stored`` (the storing job's marker paths) where a
    diagnostic names a location replaced by the same place in ``requested``. Raises
    :class:`Unmappable`."""
    if len(stored) != len(requested):
        raise Unmappable("the two jobs name different numbers of files")
    changed = {old: new for old, new in zip(stored, requested, strict=True) if old != new}
    if not changed or not stderr:
        return stderr
    known = set(stored)
    longest = max(len(path) for path in stored)
    pieces: list[bytes] = []
    left: list[bytes] = []
    for line in stderr.splitlines(keepends=True):
        position = 0
        for start in _starts(line):
            if start < position:
                continue
            end = _path_end(line, start, known, longest)
            if end is None:
                continue
            path = line[start:end]
            pieces.append(line[position:start])
            left.append(line[position:start])
            pieces.append(changed.get(path, path))
            position = end
        pieces.append(line[position:])
        left.append(line[position:])
    _check_nothing_left(b"\0".join(left), changed)
    return b"".join(pieces)


def _starts(line: bytes) -> list[int]:
    """Where a location's path may start in ``line`` (after colour escapes)."""
    places = [0] + [m.end() for m in _PLACES.finditer(line, 0, MAX_PATH_BYTES)]
    starts = []
    for place in places[: MAX_COLONS + 1]:
        escapes = _ESCAPES.match(line, place)
        starts.append(escapes.end() if escapes else place)
    return sorted(set(starts))


def _path_end(line: bytes, start: int, known: set[bytes], longest: int) -> int | None:
    """Where the one known path that starts at ``start`` and is followed by ``:`` ends
    (None: none does). Two that would fit make the line ambiguous: Unmappable."""
    found = None
    colon = start - 1
    for _ in range(MAX_COLONS):
        colon = line.find(b":", colon + 1, start + longest + 1)
        if colon < 0:
            break
        if line[start:colon] in known:
            if found is not None:
                raise Unmappable("two stored paths fit one location")
            found = colon
    return found


def _check_nothing_left(rest: bytes, changed: dict[bytes, bytes]) -> None:
    """Raises Unmappable if any changed stored path can be in ``rest``: each is searched
    for by the part that changed (the path up to the directory its counterpart shares:
    ``/home/alice/p`` of ``/home/alice/p/src/a.c``), so one search covers a checkout."""
    needles = {_changed_part(old, new) for old, new in changed.items()}
    if len(rest) * len(needles) > MAX_WORK_BYTES:
        raise Unmappable("too much stderr to check for unmapped paths")
    for needle in needles:
        if needle in rest:
            raise Unmappable(f"a stored path is named outside a location: {needle!r}")


def _changed_part(old: bytes, new: bytes) -> bytes:
    """The shortest prefix of ``old`` that every mention of ``old`` contains and that
    ``new`` does not end with: ``old`` up to its longest common suffix with ``new``
    that starts at a ``/`` (all of ``old`` if that leaves nothing)."""
    common = 0
    limit = min(len(old), len(new))
    while common < limit and old[-1 - common] == new[-1 - common]:
        common += 1
    cut = old.find(b"/", len(old) - common)
    prefix = old[:cut] if cut > 0 else b""
    return prefix or old
