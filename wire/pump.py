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


MAX_DEPTH = 64
"""Components of one path (a real tree's are a few dozen deep)."""
MAX_NAME_BYTES = 3072
"""A path's bytes: Linux's PATH_MAX (4096) less room for the job's own directory."""
MAX_COMPONENT_BYTES = 255
"""One component's bytes (NAME_MAX)."""
MAX_DIRECTORIES = 65_536
"""Directories one request makes (a large C++ translation unit reads a few thousand
headers from a few hundred)."""
MAX_TOPS = 64
"""Top-level names one request makes: each is a bind of the job's sandbox."""


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
    """The first components of everything made, each a directory: what a sandbox binds
    at the root."""
    system_dirs: tuple[str, ...] = ()
    names: frozenset[str] = frozenset()
    """The files and links sent."""

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


def path_parts(path: str, what: str) -> list[str]:
    """The components of a clean absolute path below the root; refuses anything else."""
    if not path.startswith("/"):
        raise TreeRefused(f"{what} {_shown(path)} is not an absolute path")
    if len(path.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise TreeRefused(f"{what} {_shown(path)} is longer than {MAX_NAME_BYTES} bytes")
    parts = path[1:].split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise TreeRefused(f"{what} {_shown(path)} has an empty, '.' or '..' component")
    if len(parts) > MAX_DEPTH:
        raise TreeRefused(f"{what} {_shown(path)} is more than {MAX_DEPTH} components deep")
    if any(len(p.encode("utf-8", "surrogateescape")) > MAX_COMPONENT_BYTES for p in parts):
        raise TreeRefused(f"{what} {_shown(path)} has a component over {MAX_COMPONENT_BYTES} bytes")
    return parts


def system_shaped(name: str, target: str) -> bool:
    """Whether a link at ``name`` is the include server's "the server's own directory":
    ``../`` enough times to reach the root, then ``name`` again."""
    rest, ups = target, 0
    while rest.startswith("../"):
        rest, ups = rest[3:], ups + 1
    return rest == name[1:] and ups >= name.count("/") - 1


_DIR, _FILE, _LINK = 0, 1, 2


class _Trie:
    """The request's paths as nodes (node 0 is the root): each path is walked once,
    component by component, and a link's target is walked the same way, each step
    O(1): no path string is built per ancestor."""

    def __init__(self, reserved: frozenset[str]) -> None:
        self.reserved = reserved
        self.children: list[dict[str, int]] = [{}]
        self.parent = [0]
        self.kind = [_DIR]
        self.directories = 0

    def add(self, path: str, what: str, kind: int) -> int:
        """The node of ``path``, its directories made; ``kind`` _DIR for a directory
        (found or made), else a new file or link (refused if the name is taken)."""
        parts = path_parts(path, what)
        if parts[0] in self.reserved:
            raise TreeRefused(
                f"{what} {_shown(path)} is in /{parts[0]}, which holds the server's own "
                "toolchain and system headers: a request cannot replace them"
            )
        if kind != _DIR and len(parts) == 1:
            # (a sandbox binds each top-level name: only directories the server makes)
            raise TreeRefused(f"{what} {_shown(path)}: a file or link at the root is not made")
        node = 0
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            child = self.children[node].get(part)
            if child is not None:
                if last and kind != _DIR:
                    raise TreeRefused(f"{what} {_shown(path)} is sent twice, or is a directory")
                if self.kind[child] != _DIR:
                    raise TreeRefused(f"{what} {_shown(path)} is under a file or link sent")
                node = child
                continue
            child = len(self.kind)
            self.children[node][part] = child
            self.children.append({})
            self.parent.append(node)
            self.kind.append(kind if last else _DIR)
            if self.kind[child] == _DIR:
                self.directories += 1
                if self.directories > MAX_DIRECTORIES:
                    raise TreeRefused(f"the request makes more than {MAX_DIRECTORIES} directories")
            node = child
        return node

    def check_link(self, node: int, name: str, target: str) -> None:
        """A link must lead, through directories of the request only, to a file or a
        directory of the request: never to another link (a chain), never out of the
        tree. Walked as the kernel walks it, which is the walk here because nothing it
        passes through is a link."""
        if not target:
            raise TreeRefused(f"LINK {_shown(name)} has an empty target")
        at = 0 if target.startswith("/") else self.parent[node]
        for piece in target.split("/"):
            if self.kind[at] == _FILE:  # (the kernel: ENOTDIR, whatever follows)
                raise TreeRefused(f"LINK {_shown(name)} passes through a file")
            if piece in ("", "."):
                continue
            if piece == "..":
                at = self.parent[at]
                continue
            found = self.children[at].get(piece)
            if found is None:
                raise TreeRefused(
                    f"LINK {_shown(name)} to {_shown(target)} leads out of what the request sends"
                )
            if self.kind[found] == _LINK:
                raise TreeRefused(f"LINK {_shown(name)} leads to another link")
            at = found
        if at == 0:
            raise TreeRefused(f"LINK {_shown(name)} points to the root")

    def find(self, path: str) -> int | None:
        """The node of a clean absolute ``path``, if the request makes it."""
        node: int | None = 0
        for part in path[1:].split("/"):
            assert node is not None
            node = self.children[node].get(part)
            if node is None:
                return None
        return node

    def directory_paths(self) -> list[str]:
        """Every directory but the root, each after its parent."""
        found: list[str] = []
        stack = [(0, "")]
        while stack:
            node, path = stack.pop()
            for part, child in self.children[node].items():
                if self.kind[child] == _DIR:
                    found.append(path + "/" + part)
                    stack.append((child, path + "/" + part))
        return sorted(found, key=lambda d: (d.count("/"), d))


def check_tree(
    request: PumpRequest,
    *,
    system_dirs: Collection[str],
    reserved_tops: Collection[str],
    reserved_paths: Collection[str] = (),
) -> Tree:
    """The tree ``request`` (inflated) makes, or :class:`TreeRefused`.

    ``system_dirs``: the directories the server's compiler searches by default.
    ``reserved_tops``: top-level names the sandbox itself holds (``usr``, ``etc``, ...):
    nothing of a request may be made there (a header named /usr/include/stdio.h would
    stand for the system's). ``reserved_paths``: where else the sandbox mounts the
    toolchain (a compiler's own install tree, a trusted specs directory): nothing is made
    there or under it (the mount would hide it); above it is fine. Linear in the
    request's size."""
    if request.compressed:
        raise ValueError("check_tree needs the bodies inflated (wire.stream.inflate_pump)")
    trie = _Trie(frozenset(reserved_tops))
    files: list[tuple[str, bytes]] = []
    links: list[tuple[int, str, str]] = []
    system_links: list[str] = []
    for entry in request.entries:
        name = entry.name
        if entry.link is not None and system_shaped(name, entry.link):
            path_parts(name, "NAME")
            if name not in system_dirs:
                raise TreeRefused(
                    f"LINK {_shown(name)} asks for the server's own {_shown(name)}, which is "
                    "not a directory the server's compilers search by default (the client's "
                    "compiler or system headers differ from the server's)"
                )
            if name in system_links:
                raise TreeRefused(f"NAME {_shown(name)} is sent twice")
            system_links.append(name)
        elif entry.link is None and name.endswith("/" + MARKER) and not entry.body:
            trie.add(name.removesuffix("/" + MARKER) or "/", "NAME", _DIR)
        elif entry.link is None:
            trie.add(name, "NAME", _FILE)
            files.append((name, entry.body))
        else:
            links.append((trie.add(name, "NAME", _LINK), name, entry.link))
    trie.add(request.cwd, "CDIR", _DIR)
    for system in system_links:
        if trie.find(system) is not None:
            raise TreeRefused(f"the request makes something at or in the system link {system}")
    for path in reserved_paths:
        if trie.find(path) is not None:
            raise TreeRefused(f"the request makes something at or in {path}, the server's own")
    for node, name, target in links:
        trie.check_link(node, name, target)
    tops = tuple(sorted(trie.children[0]))
    if len(tops) > MAX_TOPS:
        raise TreeRefused(f"the request makes more than {MAX_TOPS} top-level names")
    return Tree(
        cwd=request.cwd,
        files=tuple(files),
        links=tuple((name, target) for _, name, target in links),
        directories=tuple(trie.directory_paths()),
        system_links=tuple(system_links),
        tops=tops,
        system_dirs=tuple(system_dirs),
        names=frozenset(name for name, _ in files) | {name for _, name, _ in links},
    )
