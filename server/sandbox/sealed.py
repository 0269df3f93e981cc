"""The sealed sandbox: a job that holds only its compiler's toolchain.

A job whose result may be cached runs in a sandbox of its compiler's own
(:func:`sealed_mounts`): its root holds the files and directories of
:func:`server.compilers.toolchain` (read-only, at their real paths), the links the
programs find them by (``/usr/bin/gcc``, ``/bin`` into ``/usr``, a library's soname),
its job directory and a few devices, and nothing else: no ``/etc``, no ``/proc``, no
header, no other program. Whatever a source makes its compiler or assembler read
(``.incbin``, however spelled: four reviews found spellings past the text rules of
cache/markers.py), it can only read what the compiler's identity already covers, so a
cached object never depends on anything its key leaves out (docs/decisions.md,
"Sealed sandboxes").
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from server.compilers import Toolchain
from server.sandbox.launcher import Mount

_MAX_LINKS = 40
"""How many links a path may pass through (the kernel's own bound)."""


def sealed_mounts(found: Toolchain) -> list[Mount]:
    """The mounts of a sealed sandbox for a toolchain: a read-only bind of each file and
    directory at its real path, then every link each of its names passes through
    (shallowest first, so that ``/lib`` -> ``usr/lib`` exists before a link under it).
    Raises ``OSError`` when a name does not lead to one of its files."""
    binds = [*found.files, *found.dirs]
    links: dict[str, str] = {}
    for name in found.names:
        real = _follow(name, links)
        if not any(real == b or real.startswith(b + os.sep) for b in binds):
            raise OSError(f"{name} leads to {real}, outside the toolchain")
    ordered = sorted(links.items(), key=lambda item: (item[0].count("/"), item[0]))
    return [
        *(Mount("ro-bind", path, path) for path in binds),
        *(Mount("symlink", target, at) for at, target in ordered),
    ]


def _follow(path: str, links: dict[str, str]) -> str:
    """Resolve ``path`` a component at a time as the kernel does, adding each link it
    passes through to ``links`` (where: what it says); return where it leads."""
    pending = [part for part in os.path.abspath(path).split("/") if part]
    current = "/"
    hops = 0
    while pending:
        part = pending.pop(0)
        step = os.path.join(current, part)
        if not os.path.islink(step):
            current = step
            continue
        hops += 1
        if hops > _MAX_LINKS:
            raise OSError(f"{path}: too many links")
        target = os.readlink(step)
        links[step] = target
        rest = [p for p in target.split("/") if p]
        if target.startswith("/"):
            current = "/"
        pending[:0] = rest
    return os.path.normpath(current)


_SPECS = ("-specs", "--specs")


def sealed_kind(kinds: dict[str, str], compiler_path: str, argv: Sequence[str]) -> str | None:
    """The sealed sandbox a job runs in (``kinds``: :attr:`Sandbox.sealed_kinds`), or
    None: every job of a compiler that has one, but those that name a specs file (which
    only the other sandbox holds: the trusted specs directories; never cached)."""
    kind = kinds.get(compiler_path)
    if kind is None or any(a.startswith(_SPECS) for a in argv[1:]):
        return None
    return kind
