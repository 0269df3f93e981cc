"""A pump job's sandbox (server/pump.py): the client's tree at its own paths.

Either a sandbox of its own, started for the job: its tree written under the job's
directory first, each of its top-level names bound there (:func:`layout_for`); or one
started ahead of it (server/sandbox/warm.py), whose root is the job directory's ``root``
(:func:`warm_layout`, :func:`prepare_root`), the tree written into it when the job
comes, before anything of the job runs (:func:`take_warm`): the sandbox's setup, about
5 ms, is then not the client's wait.
"""

from __future__ import annotations

import functools
import os
import stat

from server.sandbox.launcher import Layout, Sandbox
from server.sandbox.spawn import Started, spawn
from server.sandbox.warm import WarmPool
from wire.pump import RESERVED_TOPS, Tree


def reserved(sandbox: Sandbox) -> tuple[frozenset[str], tuple[str, ...]]:
    """Where the job's sandbox holds the toolchain itself: top-level names (``usr``, the
    links into it, ...) and the paths of its other mounts (a compiler's own install
    tree, a trusted specs directory), which a request may not make or shadow."""
    tops = {m.target.split("/")[1] for m in sandbox.mounts if m.target.count("/") == 1}
    return frozenset(RESERVED_TOPS) | tops, tuple(m.target for m in sandbox.mounts)


def write_tree(job_dir: str, tree: Tree, output_dir: str = "/tmp", warm: bool = False) -> None:
    """Make ``tree`` under ``job_dir``/root (its /tmp and the object's directory
    ``output_dir`` too, as a build system's compile expects them), before the sandbox
    starts, or (``warm``) in the root of a sandbox started ahead, made by
    :func:`prepare_root` (its /tmp too), whose job has not run yet: directories the job
    may write in (its object, its temporary files), files it may only read. Nothing is
    made through a link (each directory is new; each file is made exclusively, without
    following one). Blocking: run it in a thread for a large tree."""
    root = os.path.join(job_dir, "root")
    if not warm:
        os.mkdir(root, 0o755)
    wanted = {"/tmp", *tree.directories, *_ancestors(output_dir)} - ({"/tmp"} if warm else set())
    for directory in sorted(wanted, key=lambda d: (d.count("/"), d)):
        try:
            os.mkdir(root + directory)
        except FileExistsError:
            # (warm: a mount point bubblewrap made on the way to a toolchain under the
            # client's tops, /tmp/... for the tests' stand-ins: a directory, never a link)
            if not warm or not stat.S_ISDIR(os.lstat(root + directory).st_mode):
                raise
        # (for the job's uid: no other job's reaches into job_dir, which is 0700)
        os.chmod(root + directory, 0o777)  # noqa: S103
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for name, body in tree.files:
        fd = os.open(root + name, flags, 0o444)
        with os.fdopen(fd, "wb") as out:
            out.write(body)
    for name, target in tree.links:
        os.symlink(target, root + name)


def _ancestors(path: str) -> list[str]:
    """``path`` (absolute, clean) and the directories above it, but ``/``."""
    parts = path.split("/")[1:]
    return ["/" + "/".join(parts[:end]) for end in range(1, len(parts) + 1)]


def prepare_root(job_dir: str) -> None:
    """A root for a pump job's sandbox started ahead (:func:`warm_layout`), and its /tmp:
    writable by the job's uid (bubblewrap, as that uid, makes the toolchain's mount
    points there; no other uid reaches into ``job_dir``, which is 0700)."""
    for directory in (f"{job_dir}/root", f"{job_dir}/root/tmp"):
        os.mkdir(directory)
        os.chmod(directory, 0o777)  # noqa: S103


def warm_layout(job_dir: str, compiler_path: str, system: tuple[str, ...]) -> Layout:
    """The view of a pump job's sandbox started ahead, before its tree is known: the job
    directory's ``root`` as the sandbox's root (the tree is written into it when the
    job comes), the toolchain and ``system`` (its compiler's system include
    directories, sealed) bound in it; the job's command changes to its directory."""
    path = f"{os.path.dirname(compiler_path)}:/usr/bin:/bin"
    return Layout(((f"{job_dir}/root", "/"),), "/tmp", path, system, root=True)


CHANGE_DIRECTORY = 'cd -- "$0" && exec "$@"'
"""How a pump job started ahead runs in its working directory (``sh -c`` with it as
``$0``, the compiler's command after)."""


def pump_key(compiler_path: str, sealed: bool) -> str:
    """A pump job's kind of sandbox started ahead (server/sandbox/warm.py)."""
    return f"pump{':sealed' if sealed else ''}:{compiler_path}"


def layout_for(
    job_dir: str, tree: Tree, compiler_path: str = "/usr/bin/cc", sealed: bool = False
) -> Layout:
    """The binds of the tree's top-level names: each a directory the server made
    (bubblewrap follows a link in a bind's source, on the server: a review bound the
    server's /tmp through one; wire.pump makes none there, and this checks)."""
    tops = sorted({"tmp", *tree.tops})
    binds = tuple((f"{job_dir}/root/{top}", f"/{top}") for top in tops)
    for source, _ in binds:
        if not stat.S_ISDIR(os.lstat(source).st_mode):
            raise OSError(f"{source} is not a directory the server made")
    path = f"{os.path.dirname(compiler_path)}:/usr/bin:/bin"
    system = tuple(d for d in tree.system_dirs if os.path.isdir(d)) if sealed else ()
    return Layout(binds, tree.cwd, path, system)


def take_warm(
    warm: WarmPool | None,
    compiler_path: str,
    kind: str | None,
    system: tuple[str, ...],
    sandbox: Sandbox,
    jobs_root: str,
) -> Started | None:
    """A pump sandbox started ahead for this compiler, or None (the job starts its own,
    and the pool learns to keep one of this kind ready for the next)."""
    if warm is None:
        return None
    key = pump_key(compiler_path, kind is not None)
    held = tuple(d for d in system if os.path.isdir(d)) if kind is not None else ()
    layout = functools.partial(warm_layout, compiler_path=compiler_path, system=held)

    def start() -> Started:
        started = spawn(sandbox, jobs_root, None, prepare_root, kind, layout)
        started.pool_key = key
        return started

    warm.starters[key] = start
    ready = warm.take(key)
    if ready is None:
        warm.cold += 1
    return ready
