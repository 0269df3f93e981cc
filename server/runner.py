"""Run one compile: its own directory, its sandbox, a lifetime, and a kill.

The compiler runs through the sandbox's launcher (server/sandbox/launcher.py), with no
stdin, its output captured up to a bound, in a new session (so its process
group is ours to kill whole; under bubblewrap its pid namespace takes every
other process of the job with it). We stop it when its lifetime passes or when
``client_gone`` completes: SIGTERM to the group, SIGKILL after
``kill_grace_s``. Whatever happens, the group is swept with SIGKILL while its
leader is still an unreaped zombie (so its pid, and with it the group id, cannot
have been reused), the object is read without trusting the job's files, and the
directory is removed; both off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Literal

import structlog

from daemon.judge import Job
from server.output import NoObject, read_output
from server.sandbox.launcher import JOB_ROOT_INSIDE, Sandbox
from server.sandbox.spawn import (
    Started,
    close_fds,
    kill,
    kill_init,
    pin_waiting,
    send_command,
    spawn,
)
from server.sandbox.warm import WarmPool
from wire.events import exit_status, signal_status
from wire.stream import LOOP_CODEC_BYTES

log = structlog.get_logger("distlb.server.runner")

JobResult = Literal["ok", "compile_error", "timeout", "client_disconnect"]
_PIPE_DRAIN_S = 2.0
_SIGKILL_WAIT_S = 5.0
_READ_BYTES = 1 << 16
_NOTE_ROOM = 200
"""Bytes kept free in a capped stderr for the note that says so."""


@dataclass(frozen=True, slots=True)
class RunLimits:
    lifetime_s: float
    kill_grace_s: float = 0.5
    max_output_bytes: int = 16 * 1024 * 1024
    """Each of stdout and stderr, the note of what was dropped included."""
    max_object_bytes: int = 256 * 1024 * 1024


@dataclass(slots=True)
class CompileResult:
    outcome: JobResult
    status: int
    """The wait status sent to the client."""
    stderr: bytes = field(repr=False)
    stdout: bytes = field(repr=False)
    obj: bytes = field(repr=False)
    pgid: int
    seconds: float
    limit: str | None = None
    """The resource bound the job ran into (memory, file_size, processes, open_files,
    cpu, output), if any."""


class Capture:
    """Collects a pipe's bytes up to a limit; the rest is counted and dropped.

    Read through the loop's ``add_reader`` on the pipe's own descriptor, which only its
    file object closes (:meth:`close`). Not a pipe transport: uvloop's
    ``connect_read_pipe`` closes the descriptor itself and then again through the file
    object (uvloop issue 763), and the second close took whatever another thread had
    opened under that number meanwhile (a job directory left with "Bad file
    descriptor", a client's socket reset: bench/pump.py --project git)."""

    def __init__(self, limit: int, pipe: IO[bytes]) -> None:
        self._limit = max(0, limit - _NOTE_ROOM)  # the note fits within the limit
        self._chunks: list[bytes] = []
        self._kept = 0
        self.dropped = 0
        self._loop = asyncio.get_running_loop()
        self._pipe = pipe
        self._fd = pipe.fileno()
        self.closed: asyncio.Future[None] = self._loop.create_future()
        """Done at the pipe's end (or once closed)."""
        os.set_blocking(self._fd, False)
        self._loop.add_reader(self._fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, _READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        room = self._limit - self._kept
        if room > 0:
            self._chunks.append(data[:room])
            self._kept += min(room, len(data))
        self.dropped += max(0, len(data) - max(room, 0))

    def close(self) -> None:
        """Stop reading and close the pipe (idempotent)."""
        if not self.closed.done():
            self._loop.remove_reader(self._fd)  # (before the number is freed)
            self._pipe.close()
            self.closed.set_result(None)

    def value(self) -> bytes:
        data = b"".join(self._chunks)
        if self.dropped:
            data += b"\ndistlb-server: %d more bytes of output dropped\n" % self.dropped
        return data


def _set_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


async def run_compile(
    job: Job,
    compiler_path: str,
    source: bytes,
    *,
    jobs_root: str,
    sandbox: Sandbox,
    limits: RunLimits,
    client_gone: asyncio.Future[None] | asyncio.Task[None],
    warm: WarmPool | None = None,
    sealed: str | None = None,
) -> CompileResult:
    """Compile ``source`` as ``job`` says, with ``compiler_path``, in a directory of its
    own under ``jobs_root`` (a sandbox from ``warm`` when one is ready; ``sealed``: the
    kind of sealed sandbox it runs in, server/sandbox/sealed.py), and return the
    result (never raises for the compiler's own failures; raises ``OSError`` when the
    job cannot start)."""
    started_at = time.monotonic()
    # A name the source cannot know: an assembler's .incbin or .include of the job's
    # own text (the paths of its markers and all) put them into a cached object, under
    # any spelling a text scan could miss (octal escapes, concatenated strings, upper
    # case: a sixth review).
    input_name = f"input-{secrets.token_hex(8)}{job.source_suffix}"
    output_name = "output" + job.output_suffix

    def command_for(inside: str) -> list[str]:
        return job.command(compiler_path, f"{inside}/{input_name}", f"{inside}/{output_name}")

    def prepare(job_dir: str) -> None:
        _write_input(job_dir, input_name, source)

    started: Started | None = None
    try:
        # (a big source is written in a thread: 256 MiB on the loop stalled /status)
        big = len(source) > LOOP_CODEC_BYTES
        if warm is None:
            started = (
                await asyncio.to_thread(spawn, sandbox, jobs_root, command_for, prepare, sealed)
                if big
                else spawn(sandbox, jobs_root, command_for, prepare, sealed)
            )
        else:
            started = await _start_waiting(
                warm, sandbox, jobs_root, prepare, command_for, big, sealed
            )
            # The next job's sandbox is started while this one compiles (the loop is
            # idle then), not between the compiler's exit and the reply.
            asyncio.get_running_loop().call_soon(warm.fill)
        return await run_started(started, output_name, sandbox, limits, client_gone, started_at)
    finally:
        if started is not None:
            await give_back(sandbox, started)
        if warm is not None:
            warm.fill()


async def give_back(sandbox: Sandbox, started: Started) -> None:
    """A finished job's directory, removed off the loop (a job may leave thousands of
    files), safe against symlinks it planted (the walk goes by file descriptor), however
    deep; then its uid, also when the directory could not be removed (logged and
    counted). Called before the reply, while the job holds its slot: the slot bounds the
    directories and uids not yet given back."""
    try:
        await asyncio.to_thread(sandbox.job_dirs.remove, started.job_dir)
    finally:
        sandbox.release_user(started.user)


async def _start_waiting(
    warm: WarmPool,
    sandbox: Sandbox,
    jobs_root: str,
    prepare: Callable[[str], None],
    command_for: Callable[[str], list[str]],
    big: bool,
    kind: str | None,
) -> Started:
    """A sandbox for the job, under bubblewrap: one started ahead, else one of its own
    started the same way (set up while the source is written); either way its init is
    pinned and it is reniced before it gets its command, so nothing of the job runs
    before. A sandbox that has gone is replaced once. Raises ``OSError``."""
    for attempt in (1, 2):
        ready = warm.take(kind)
        if ready is None:
            warm.cold += 1
            ready = spawn(sandbox, jobs_root, None, sealed=kind)
        try:
            if big:
                await asyncio.to_thread(prepare, ready.job_dir)  # (a big write: off the loop)
            else:
                prepare(ready.job_dir)
            await pin_waiting(ready)
            sandbox.renice_waiting(ready.proc.pid)
            await send_command(ready, command_for(JOB_ROOT_INSIDE))
            return ready
        except BaseException as exc:
            _discard(ready, sandbox)  # (cancelled too: nothing of it is left)
            if not isinstance(exc, OSError) or attempt == 2:
                raise
            log.warning("sandbox_replaced", reason=str(exc))
    raise AssertionError("unreachable")


def _discard(started: Started, sandbox: Sandbox) -> None:
    kill(started)
    sandbox.job_dirs.remove(started.job_dir)  # (nothing of the job ran: just its source)
    sandbox.release_user(started.user)


def _write_input(job_dir: str, input_name: str, source: bytes) -> None:
    # Blocking, on the loop: about a millisecond. Never through a name the job planted.
    fd = os.open(
        os.path.join(job_dir, input_name),
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
        0o644,
    )
    with os.fdopen(fd, "wb") as source_file:
        source_file.write(source)


async def run_started(
    started: Started,
    output_name: str,
    sandbox: Sandbox,
    limits: RunLimits,
    client_gone: asyncio.Future[None] | asyncio.Task[None],
    started_at: float,
) -> CompileResult:
    loop = asyncio.get_running_loop()
    job_dir, proc = started.job_dir, started.proc
    pgid = proc.pid
    exited: asyncio.Future[None] = loop.create_future()
    pidfd = os.pidfd_open(proc.pid)
    loop.add_reader(pidfd, _set_once, exited)
    captures: list[Capture] = []
    try:
        for pipe in (proc.stdout, proc.stderr):
            assert pipe is not None
            captures.append(Capture(limits.max_output_bytes, pipe))
        await asyncio.wait(
            {exited, client_gone}, timeout=limits.lifetime_s, return_when=asyncio.FIRST_COMPLETED
        )
        outcome: JobResult | None = None
        if not exited.done():
            outcome = "client_disconnect" if client_gone.done() else "timeout"
            log.warning("compile_killing", reason=outcome, pgid=pgid)
            kill_init(started)
            _signal_group(pgid, signal.SIGTERM)
            await asyncio.wait({exited}, timeout=limits.kill_grace_s)
            if not exited.done():
                _signal_group(pgid, signal.SIGKILL)
                await asyncio.wait({exited}, timeout=_SIGKILL_WAIT_S)
        # Sweep the group while the leader is an unreaped zombie: nothing of the
        # job may outlive it, and its pgid cannot yet belong to anyone else.
        kill_init(started)
        _signal_group(pgid, signal.SIGKILL)
        returncode = proc.wait(timeout=_SIGKILL_WAIT_S)
        await asyncio.wait([c.closed for c in captures], timeout=_PIPE_DRAIN_S)
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        for capture in captures:
            capture.close()
        if proc.returncode is None:
            kill_init(started)
            _signal_group(pgid, signal.SIGKILL)
            proc.wait()
        close_fds(started)
    stdout, stderr = captures[0].value(), captures[1].value()
    seconds = time.monotonic() - started_at
    if outcome == "timeout":
        stderr += (
            b"distlb-server: compile killed after %.0f s (job lifetime); "
            b"the compiler did not finish\n" % limits.lifetime_s
        )
        return CompileResult(outcome, exit_status(1), stderr, stdout, b"", pgid, seconds)
    if outcome == "client_disconnect":
        return CompileResult(
            outcome, signal_status(signal.SIGTERM), stderr, stdout, b"", pgid, seconds
        )
    status = exit_status(returncode) if returncode >= 0 else signal_status(-returncode)
    if status != 0:
        limit = limit_hit(stderr)
        if limit is not None:
            stderr += _limit_note(limit, sandbox)
        return CompileResult("compile_error", status, stderr, stdout, b"", pgid, seconds, limit)
    obj = await asyncio.to_thread(read_output, job_dir, output_name, limits.max_object_bytes)
    if isinstance(obj, NoObject):
        stderr += f"distlb-server: {obj.reason}\n".encode()
        return CompileResult(
            "compile_error", exit_status(1), stderr, stdout, b"", pgid, seconds, obj.limit
        )
    return CompileResult("ok", 0, stderr, stdout, obj, pgid, seconds)


# What a compiler says when a bound stops it, most specific first. A compiler that
# lies here only mislabels its own failure.
_LIMIT_SIGNS: tuple[tuple[str, tuple[bytes, ...]], ...] = (
    ("file_size", (b"File size limit exceeded", b"signal 25", b"File too large")),
    ("cpu", (b"CPU time limit exceeded", b"signal 24")),
    ("open_files", (b"Too many open files",)),
    ("processes", (b"Cannot fork", b"cannot fork", b"Resource temporarily unavailable")),
    ("memory", (b"Cannot allocate memory", b"memory exhausted", b"out of memory",
                b"std::bad_alloc")),
)  # fmt: skip


LIMITS = ("output", *(name for name, _ in _LIMIT_SIGNS))
"""Every resource bound a job can be stopped by, as /status and the metrics name it."""


def limit_hit(stderr: bytes) -> str | None:
    """Which job limit a failed compile ran into, judged from what it said."""
    for limit, signs in _LIMIT_SIGNS:
        if any(sign in stderr for sign in signs):
            return limit
    return None


def _limit_note(limit: str, sandbox: Sandbox) -> bytes:
    bounds = sandbox.limits
    described = {
        "file_size": f"a file may hold {bounds.file_bytes >> 20} MB (--job-file-mb)",
        "cpu": f"{bounds.cpu_s} s of CPU time (the job lifetime)",
        "open_files": f"{bounds.open_files} open files (--job-open-files)",
        "processes": f"{bounds.processes} processes (--job-processes)",
        "memory": (
            f"{bounds.memory_bytes >> 20} MB of memory (--job-memory-mb)"
            if bounds.memory_bytes
            else "memory"
        ),
    }[limit]
    return f"distlb-server: the job ran into its limit: {described}\n".encode()
