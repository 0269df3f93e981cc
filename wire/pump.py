"""Pump mode's files, checked before anything is written (sans-IO).

A protocol 3 request names each file by the client's own absolute path. A server that
serves it (server/pump.py) writes them at those paths in a job's own root and compiles
there, so every name and every link target must be a plain absolute path that stays
inside what the request itself sends: distccd does not check either (its source says so
in FIXMEs: a ``..`` in a name writes outside its temp dir, a link target is followed as
given). :func:`check_tree` is the one place that says what a request may make.

Two shapes come from distcc's include server and are not files of the tree:

- a ``NAME`` ending in ``/forcing_technique_271828`` with an empty ``FILE`` only makes
  its directory;
- a system include directory is sent as a ``LINK`` at that directory's own path whose
  target climbs to the root (``../`` repeated) and comes back down to the same path:
  "use the server's own". At its own path that link would point at itself, so it is not
  made; it is taken only for a directory the server's compiler searches by default
  (``system_dirs``), which the job's sandbox holds read-only.
"""

from __future__ import annotations

import posixpath
from collections.abc import Collection
from dataclasses import dataclass, field

from wire.events import PumpRequest

MARKER = "forcing_technique_271828"
"""The include server's file that only makes its directory."""
RESERVED_TOPS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "dev",
                 "proc", "sys")  # fmt: skip
"""Top-level names a server's sandbox holds itself (its toolchain, system headers, the
loader's files, devices): nothing of a request is made there (a server adds the tops of
its own toolchain's mounts)."""


class TreeRefused(Exception):
    """A pump request whose files would not stay inside its job; the message says which
    name and why (it goes to the client's stderr)."""


@dataclass(frozen=True, slots=True)
class Tree:
    """What a checked pump request makes, every path absolute and clean."""

    cwd: str
    files: tuple[tuple[str, bytes], ...] = field(repr=False)
    links: tuple[tuple[str, str], ...]
    directories: tuple[str, ...]
    """Every directory to make, each after its parent (the working directory's too)."""
    system_links: tuple[str, ...]
    """System directories the client asked for as the server's own (not made)."""
    tops: tuple[str, ...]
    """The first components of everything made: what a sandbox binds at the root."""
    system_dirs: tuple[str, ...] = ()

    @property
    def names(self) -> frozenset[str]:
        """The files and links sent."""
        return frozenset(name for name, _ in (*self.files, *self.links))

    def visible(self, path: str) -> bool:
        """Whether an absolute, normalized ``path`` is under one of the tree's own
        top-level names (in the job's sandbox, only the tree is there)."""
        parts = path.split("/")
        return len(parts) >= 2 and parts[1] in self.tops

    def in_system_dirs(self, path: str) -> bool:
        """Whether an absolute, normalized ``path`` is in a system include directory."""
        return any(path == d or path.startswith(d + "/") for d in self.system_dirs)


def _shown(path: str) -> str:
    return repr(path if len(path) <= 200 else path[:200] + "...")


def _parts(path: str, what: str) -> list[str]:
    """The components of a clean absolute path; refuses anything else."""
    if not path.startswith("/"):
        raise TreeRefused(f"{what} {_shown(path)} is not an absolute path")
    parts = path[1:].split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise TreeRefused(f"{what} {_shown(path)} has an empty, '.' or '..' component")
    return parts


def system_shaped(name: str, target: str) -> bool:
    """Whether a link at ``name`` is the include server's "the server's own directory":
    ``../`` enough times to reach the root, then ``name`` again."""
    rest, ups = target, 0
    while rest.startswith("../"):
        rest, ups = rest[3:], ups + 1
    return rest == name[1:] and ups >= name.count("/") - 1


def check_tree(
    request: PumpRequest, *, system_dirs: Collection[str], reserved_tops: Collection[str]
) -> Tree:
    """The tree ``request`` (inflated) makes, or :class:`TreeRefused`.

    ``system_dirs``: the directories the server's compiler searches by default.
    ``reserved_tops``: top-level names the sandbox itself holds (``usr``, ``etc``, ...):
    nothing of a request may be made there (a header named /usr/include/stdio.h would
    stand for the system's)."""
    if request.compressed:
        raise ValueError("check_tree needs the bodies inflated (wire.stream.inflate_pump)")
    reserved = frozenset(reserved_tops)
    seen: set[str] = set()
    files: dict[str, bytes] = {}
    links: dict[str, str] = {}
    system_links: list[str] = []
    directories: set[str] = set()

    def place(path: str, what: str, parts: list[str]) -> None:
        if parts[0] in reserved:
            raise TreeRefused(
                f"{what} {_shown(path)} is in /{parts[0]}, which holds the server's own "
                "toolchain and system headers: a request cannot replace them"
            )
        for end in range(1, len(parts)):
            directories.add("/" + "/".join(parts[:end]))

    for entry in request.entries:
        name = entry.name
        parts = _parts(name, "NAME")
        if name in seen:
            raise TreeRefused(f"NAME {_shown(name)} is sent twice")
        seen.add(name)
        if entry.link is not None and system_shaped(name, entry.link):
            if name not in system_dirs:
                raise TreeRefused(
                    f"LINK {_shown(name)} asks for the server's own {_shown(name)}, which is "
                    "not a directory the server's compilers search by default (the client's "
                    "compiler or system headers differ from the server's)"
                )
            system_links.append(name)
            continue
        place(name, "NAME", parts)
        if entry.link is None and parts[-1] == MARKER and not entry.body:
            directories.add(posixpath.dirname(name))
        elif entry.link is None:
            files[name] = entry.body
        else:
            links[name] = entry.link
    cwd_parts = _parts(request.cwd, "CDIR")
    place(request.cwd, "CDIR", cwd_parts)
    directories.add(request.cwd)
    for leaf in (*files, *links):
        if leaf in directories:
            raise TreeRefused(f"NAME {_shown(leaf)} is both a file and a directory")
        for system in system_links:
            if leaf.startswith(system + "/"):
                raise TreeRefused(f"NAME {_shown(leaf)} is inside the system link {system}")
    for name, target in links.items():
        _check_link(name, target, files, links, directories)
    tops = {path.split("/")[1] for path in (*directories, *files, *links)}
    return Tree(
        cwd=request.cwd,
        files=tuple(files.items()),
        links=tuple(links.items()),
        directories=tuple(sorted(directories, key=lambda d: (d.count("/"), d))),
        system_links=tuple(system_links),
        tops=tuple(sorted(tops)),
        system_dirs=tuple(system_dirs),
    )


def _check_link(
    name: str,
    target: str,
    files: Collection[str],
    links: Collection[str],
    directories: Collection[str],
) -> None:
    """A link must lead, through directories of the request only, to a file or a
    directory of the request: never to another link (a chain), never out of the tree.
    Walked as the kernel would walk it, which is the lexical walk here because nothing
    it passes through is a link."""
    if not target:
        raise TreeRefused(f"LINK {_shown(name)} has an empty target")
    current = [] if target.startswith("/") else name.split("/")[1:-1]
    pieces = [piece for piece in target.split("/") if piece not in ("", ".")]
    for index, piece in enumerate(pieces):
        if piece == "..":
            if current:
                current.pop()
        else:
            current.append(piece)
        path = "/" + "/".join(current)
        if path in links:
            raise TreeRefused(f"LINK {_shown(name)} leads to another link, {_shown(path)}")
        if index < len(pieces) - 1 and path != "/" and path not in directories:
            raise TreeRefused(
                f"LINK {_shown(name)} passes through {_shown(path)}, which is not a "
                "directory of the request"
            )
    final = "/" + "/".join(current)
    if final not in files and final not in directories:
        raise TreeRefused(
            f"LINK {_shown(name)} points to {_shown(final)}, which the request does not send"
        )
