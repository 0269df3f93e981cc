"""The sealed sandbox: a job that holds only its compiler's toolchain.

Every job of a gcc or clang driver runs in a sandbox of its compiler's own
(:func:`sealed_mounts`; but one that names a specs file: :func:`sealed_kind`): its root
holds the files and directories of
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

import contextlib
import os
import weakref
from collections.abc import Sequence

from server.compilers import Toolchain
from server.sandbox.identities import SandboxError
from server.sandbox.launcher import Mount, Sandbox, held_changed

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


def pin(mounts: list[Mount]) -> list[Mount]:
    """Each file a sealed sandbox binds, held open (``O_PATH``) as it was when the
    compiler was identified: a ``ro-bind-fd`` record of it (:func:`changed_since_pinned`
    compares its path with it). A package upgrade renames new files over the old ones
    while the server runs, and a sandbox started after it binds the new ones: the held
    files tell that the identity no longer names what a job would run (a fourteenth
    review: the new compiler's objects were stored under the old identity). (bubblewrap
    cannot bind the held file itself once it is renamed over.) Raises ``OSError`` (none
    left open then)."""
    pinned: list[Mount] = []
    paths = [m.source for m in mounts if m.kind == "ro-bind"]
    # (a directory's every subdirectory too: a file renamed into one changes its own
    # modification time, not its parent's; a fifteenth review)
    paths += [os.path.join(top, d) for p in paths if os.path.isdir(p)
              for top, subdirs, _ in os.walk(p) for d in subdirs]  # fmt: skip
    try:
        for path in paths:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            pinned.append(Mount("ro-bind-fd", str(fd), path))
    except OSError:
        unpin(pinned)
        raise
    return pinned


def unpin(mounts: list[Mount]) -> None:
    """Close what :func:`pin` opened."""
    for mount in mounts:
        if mount.kind == "ro-bind-fd":
            with contextlib.suppress(OSError):
                os.close(int(mount.source))


def changed_since_pinned(mounts: list[Mount]) -> list[str]:
    """The held files whose path now names another file (or none) than the one held
    open: checked after the identity is made from the paths (so that it is of the files
    held), and by a reload (an upgrade since)."""
    return [mount.target for mount in mounts if held_changed(mount)]


def release_when_unused(sandbox: Sandbox) -> None:
    """Close ``sandbox``'s held files once nothing uses it any more: a reload swaps in
    a new sandbox, but a connection keeps the context it began with, whose jobs still
    compare with these descriptors (closed early, a number could be reused for another
    file: a job would be turned away for nothing)."""
    mounts = [m for kind in sandbox.held.values() for m in kind]
    weakref.finalize(sandbox, unpin, mounts)


def check_pinned(held: dict[str, list[Mount]]) -> None:
    """Raise ``SandboxError`` when a pinned file's path names another file now (after
    the identities were made from the paths: they would not be of what jobs run)."""
    changed = [path for mounts in held.values() for path in changed_since_pinned(mounts)]
    if changed:
        raise SandboxError(
            f"the toolchain changed while the server identified it (an upgrade?): "
            f"{', '.join(changed[:5])}; start or reload again"
        )
