"""Starting a job's process: every compile runs in a process started here, in its
sandbox (``--sandbox bwrap``) or not (``--sandbox none``).

A sandbox is started waiting (:func:`spawn`): a shell that reads one line on its stdin,
the job's command, quoted (:func:`send_command`), then execs the compiler. Sandboxes
are started ahead of their jobs (``warm.py``) or, when none is ready, for the job. Either
way the server pins the sandbox's init before the job runs (:func:`pin_waiting`), and
kills it through that pin when the job ends (:func:`kill_init`).

What lives here: starting, feeding, pinning and killing one job's process. What must
not: deciding when to start one (``warm.py``) or what the job's limits are
(``launcher.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from server.sandbox.identities import CompileUser
from server.sandbox.launcher import Layout, Sandbox, child_env

log = structlog.get_logger("distlb.server.warm")  # (the name operators know)

_PIN_WAIT_S = 10.0
"""How long a job waits for its sandbox to be set up."""
_INFO_MAX_BYTES = 64 * 1024
_SEND_WAIT_S = 30.0
"""How long a waiting sandbox may take to read its command line (a megabyte: half a
second)."""


@dataclass
class Started:
    """A compile's sandbox, started: its directory, its uid and its process."""

    job_dir: str
    user: CompileUser | None
    proc: subprocess.Popen[bytes]
    waiting: bool
    """Started ahead, waiting for its command on stdin."""
    init: int | None = None
    """A pidfd for the init of its pid namespace, taken before its job runs."""
    info: int | None = None
    """Where bubblewrap says its init's pid (started ahead, under bubblewrap)."""
    sealed: str | None = None
    """The compiler whose sealed sandbox this is (None: the sandbox of every job)."""


def spawn(
    sandbox: Sandbox,
    jobs_root: str,
    command_for: Callable[[str], list[str]] | None,
    prepare: Callable[[str], None] | None = None,
    sealed: str | None = None,
    layout: Callable[[str], Layout] | None = None,
) -> Started:
    """A job directory of its own (``prepare`` fills it first) and a sandbox around it
    (``sealed``: that compiler's sealed sandbox; ``layout``: a pump job's, from the
    job's directory), running ``command_for(the directory as
    the compiler sees it)``, or, with None, waiting for a command. Raises ``OSError``
    (or SandboxError: no uid left)."""
    job_dir = tempfile.mkdtemp(prefix="job-", dir=jobs_root)
    user = sandbox.acquire_user()
    info: int | None = None
    info_w: int | None = None
    try:
        if prepare is not None:
            prepare(job_dir)
        if user is not None:
            os.chown(job_dir, user.uid, user.gid)  # the directory stays 0700: its uid's
        inside = sandbox.job_root_inside or job_dir
        view = layout(job_dir) if layout is not None else None
        command = command_for(inside) if command_for is not None else None
        if command is None and sandbox.mode == "bwrap":
            info, info_w = os.pipe()
        # Fork/exec on the loop is deliberate: about a millisecond, and Popen is what
        # gives us the session.
        try:
            proc = subprocess.Popen(
                sandbox.job_argv(job_dir, user, command, info_w, sealed, view),
                cwd=job_dir,
                env=child_env(inside, sealed is not None, view.path if view else None),
                stdin=subprocess.DEVNULL if command is not None else subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
                pass_fds=(info_w,) if info_w is not None else (),
            )
        finally:
            if info_w is not None:
                os.close(info_w)
        if command is None:
            sandbox.renice_waiting(proc.pid)
    except BaseException:
        if info is not None:
            os.close(info)
        sandbox.release_user(user)
        sandbox.job_dirs.remove(job_dir)
        raise
    return Started(job_dir, user, proc, command is None, info=info, sealed=sealed)


async def send_command(started: Started, command: list[str]) -> None:
    """Give a waiting sandbox its command, as one line: each newline in an argument
    (always inside single quotes there) is sent as ``'"$nl"'``, which the waiting
    shell, where ``nl`` holds one, reads back as the newline. Written as the pipe takes
    it, without blocking the loop: the shell reads a line a byte at a time, and a 1 MiB
    command line kept a blocking write (and everything else) waiting 0.3-0.45 s. Raises
    ``OSError`` when the sandbox has gone, or has not read it within _SEND_WAIT_S."""
    assert started.proc.stdin is not None
    line = shlex.join(command).replace("\n", "'\"$nl\"'")
    data = memoryview((line + "\n").encode("utf-8", "surrogateescape"))
    fd = started.proc.stdin.fileno()
    os.set_blocking(fd, False)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _SEND_WAIT_S
    try:
        while data:
            try:
                data = data[os.write(fd, data) :]
                continue
            except BlockingIOError:
                pass
            writable: asyncio.Future[None] = loop.create_future()
            loop.add_writer(fd, _set_once, writable)
            try:
                await asyncio.wait({writable}, timeout=max(0.0, deadline - loop.time()))
            finally:
                loop.remove_writer(fd)
            if not writable.done():
                raise OSError(f"the sandbox did not read its command in {_SEND_WAIT_S:.0f} s")
    finally:
        started.proc.stdin.close()


def close_fds(started: Started) -> None:
    """Close what the server holds of a sandbox besides its pipes."""
    for fd in (started.init, started.info):
        if fd is not None:
            os.close(fd)
    started.init = started.info = None


def kill(started: Started) -> None:
    """End a sandbox that will not be used, and take back its directory and uid."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(started.proc.pid, signal.SIGKILL)
    started.proc.wait()
    close_fds(started)
    for pipe in (started.proc.stdin, started.proc.stdout, started.proc.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


def pin_init(monitor: int, init: int) -> int | None:
    """A pidfd for ``init``, the init of a job's pid namespace, opened while it is still
    the child of its bubblewrap monitor, ``monitor`` (so a reused pid is never taken
    for it); None when it is not. Taken before anything of the job runs, it outlives
    the monitor: see :func:`kill_init`."""
    try:
        pidfd = os.pidfd_open(init)
    except OSError:
        return None
    if _parent_of(init) == monitor:
        return pidfd
    os.close(pidfd)
    return None


async def pin_waiting(started: Started) -> None:
    """Pin the init of a waiting sandbox (``started.init``): read what bubblewrap says
    of it on the info pipe, to its end (it writes it in pieces, then closes the pipe
    once the sandbox is set up), then open a pidfd for that pid while it is still the
    monitor's child. Raises ``OSError`` when it cannot: the sandbox is then not used."""
    if started.init is not None:
        return
    if started.info is None:
        raise OSError("the sandbox has no info pipe")
    loop = asyncio.get_running_loop()
    said = bytearray()
    deadline = loop.time() + _PIN_WAIT_S
    while len(said) <= _INFO_MAX_BYTES:
        readable: asyncio.Future[None] = loop.create_future()
        loop.add_reader(started.info, _set_once, readable)
        try:
            await asyncio.wait({readable}, timeout=max(0.0, deadline - loop.time()))
        finally:
            loop.remove_reader(started.info)
        if not readable.done():
            raise OSError(f"bubblewrap said nothing of its sandbox in {_PIN_WAIT_S:.0f} s")
        chunk = os.read(started.info, 4096)
        if not chunk:
            break
        said += chunk
    try:
        child = int(json.loads(bytes(said))["child-pid"])
    except (ValueError, TypeError, KeyError) as exc:
        raise OSError(f"bubblewrap did not say its sandbox's init: {bytes(said)[:200]!r}") from exc
    started.init = pin_init(started.proc.pid, child)
    if started.init is None:
        raise OSError("the sandbox's init is gone before its job")


def kill_init(started: Started) -> None:
    """SIGKILL the init of the job's pid namespace, through the pidfd pinned before the
    job ran (none outside bubblewrap): the kernel then kills every process in it. The
    job runs as the same uid as that init, so it can ptrace it and clear the signal it
    gets when its monitor dies, and the monitor exits as soon as the job's first
    process does: nothing else would end it."""
    if started.init is not None:
        with contextlib.suppress(OSError):
            signal.pidfd_send_signal(started.init, signal.SIGKILL)


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
