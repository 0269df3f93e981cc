"""Pump mode (protocol 3) served: the client's sources and headers at their own paths.

A pump request carries the command line as typed and the files the client's include
server found it needs. Its tree is checked whole before anything is written
(wire.pump.check_tree: clean absolute names, links only inside the tree or the include
server's "use the server's own system directory", which must be one this server's
compiler searches), its command line judged (daemon/pump_judge.py), then the tree is
written under the job's directory and bound, in the job's bubblewrap sandbox, at the
client's own top-level names (``/home``, ...; ``/tmp`` always, the job's temporary
directory), over a root that holds the toolchain and system headers read-only
(``--sandbox bwrap`` only). The compile runs in the client's working directory, so the
object, its debug info and the dependency file are what the client's own machine
would make: nothing is rewritten. The object and the dependency file are read back
without trusting the job's files (server/output.py).

A job whose sealed toolchain or system headers changed since the server read them
(server/pump_headers.py) is turned away, before it starts or, when they changed while
it ran, instead of its answer: a balancer keys its stored result with what the report
said. Results are cached by balancers (balancer/dispatch/caching.py), not here.
"""

from __future__ import annotations

import asyncio
import functools
import os
import posixpath
import secrets
import stat
import subprocess
import time
from collections.abc import Callable, Mapping
from typing import Protocol

import structlog

from client import address_text
from daemon.judge import (
    LOOP_ARG_BYTES,
    LOOP_ARGS,
    CompilerMissing,
    Judge,
    Refused,
    normalize_compiler,
)
from daemon.pump_judge import PumpJob, accept_pump
from server.admission import turn_away_busy
from server.compilers import known_driver
from server.output import NoObject, read_output
from server.pump_headers import HeadersWatch
from server.refusals import answer_refusal
from server.runner import CompileResult, RunLimits, give_back, run_started
from server.sandbox.launcher import Layout, Sandbox
from server.sandbox.sealed import sealed_kind
from server.sandbox.spawn import Started, kill, pin_waiting, send_command, spawn
from server.slots import ReplyBudget, SlotHold
from server.stats import ServerStats
from wire.events import PumpRequest, Reply, exit_status
from wire.pump import RESERVED_TOPS, Tree
from wire.stream import LOOP_CODEC_BYTES, wait_peer_gone, write_reply


class PumpContext(Protocol):
    """What a pump job needs of the server (server/connection.py's ConnectionContext)."""

    @property
    def pump(self) -> bool: ...
    @property
    def sandbox(self) -> Sandbox: ...
    @property
    def compilers(self) -> Mapping[str, str]: ...
    @property
    def judge(self) -> Judge: ...
    @property
    def stats(self) -> ServerStats: ...
    @property
    def jobs_root(self) -> str: ...
    @property
    def run_limits(self) -> RunLimits: ...
    @property
    def io_timeout_s(self) -> float: ...
    @property
    def replies(self) -> ReplyBudget: ...
    @property
    def pump_dirs(self) -> Mapping[str, tuple[str, ...]]: ...
    @property
    def headers_watch(self) -> HeadersWatch | None: ...
    @property
    def on_upgrade(self) -> Callable[[], None]: ...


log = structlog.get_logger("distlb.server.job")
_SEARCH_START = "#include <...> search starts here:"
_SEARCH_END = "End of search list."
_GCC_INSTALLATION = "Selected GCC installation:"
_ASK_TIMEOUT_S = 30.0


def ask_include_dirs(compiler_path: str) -> tuple[str, ...]:
    """The directories ``compiler_path`` searches by default for C and C++, as real
    paths (what distcc's include server sends links for), and the GCC installation a
    clang driver selects (it finds libstdc++'s headers through it: a sealed pump job
    holds it too). Runs it: off the loop."""
    found: list[str] = []
    for language in ("c", "c++"):
        done = subprocess.run(
            [compiler_path, "-x", language, "-E", "-v", "-"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False,
            timeout=_ASK_TIMEOUT_S, env={"PATH": os.defpath, "LC_ALL": "C"},
        )  # fmt: skip
        lines = done.stderr.splitlines()
        found += [os.path.realpath(line.removeprefix(_GCC_INSTALLATION).strip())
                  for line in lines if line.startswith(_GCC_INSTALLATION)]  # fmt: skip
        if _SEARCH_START not in lines or _SEARCH_END not in lines:
            continue
        start, end = lines.index(_SEARCH_START), lines.index(_SEARCH_END)
        for line in lines[start + 1 : end]:
            path = line.strip().removesuffix(" (framework directory)")
            if path.startswith("/"):
                found.append(os.path.realpath(path))
    return tuple(dict.fromkeys(found))


def mark_pump(info: dict[str, dict[str, str]], served: bool) -> dict[str, dict[str, str]]:
    """Say in each compiler's entry (server/compilers.py) the system include directories
    it serves pump jobs with (``pump``: one a line), for a gcc or clang driver when pump
    is served: what a balancer routes pump jobs by (a client's include server asks for
    those directories as the server's own). Runs each driver: call it off the loop."""
    asked: dict[str, tuple[str, ...]] = {}
    for entry in info.values():
        entry.pop("pump", None)
        entry.pop("pump_headers", None)
        path = entry["path"]
        if served and known_driver(path, entry.get("version", "")):
            real = os.path.realpath(path)
            if real not in asked:
                asked[real] = ask_include_dirs(real)
            entry["pump"] = "\n".join(asked[real])
    return info


def pump_dirs(info: dict[str, dict[str, str]]) -> dict[str, tuple[str, ...]]:
    """Per compiler name served in pump mode (:func:`mark_pump`), its system dirs."""
    return {name: tuple(e["pump"].split("\n")) for name, e in info.items() if "pump" in e}


def reserved(sandbox: Sandbox) -> tuple[frozenset[str], tuple[str, ...]]:
    """Where the job's sandbox holds the toolchain itself: top-level names (``usr``, the
    links into it, ...) and the paths of its other mounts (a compiler's own install
    tree, a trusted specs directory), which a request may not make or shadow."""
    tops = {m.target.split("/")[1] for m in sandbox.mounts if m.target.count("/") == 1}
    return frozenset(RESERVED_TOPS) | tops, tuple(m.target for m in sandbox.mounts)


def write_tree(job_dir: str, tree: Tree, output_dir: str = "/tmp") -> None:
    """Make ``tree`` under ``job_dir``/root (its /tmp and the object's directory
    ``output_dir`` too, as a build system's compile expects them), before the sandbox
    starts: directories the job may write in (its object, its temporary files), files
    it may only read. Blocking: run it in a thread for a large tree."""
    root = os.path.join(job_dir, "root")
    os.mkdir(root, 0o755)
    wanted = {"/tmp", *tree.directories, *_ancestors(output_dir)}
    for directory in sorted(wanted, key=lambda d: (d.count("/"), d)):
        os.mkdir(root + directory)
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
    found = [d for d in tree.system_dirs if os.path.isdir(d)] if sealed else []
    # (one mount for a directory and those inside it, which it holds: /usr/include holds
    # /usr/include/c++/12; fewer mounts to make per job)
    system = tuple(d for d in found if not any(d.startswith(o + "/") for o in found))
    return Layout(binds, tree.cwd, path, system)


async def run_pump(
    job: PumpJob,
    compiler_path: str,
    tree: Tree,
    *,
    jobs_root: str,
    sandbox: Sandbox,
    limits: RunLimits,
    client_gone: asyncio.Future[None] | asyncio.Task[None],
) -> tuple[CompileResult, bytes]:
    """Compile ``job`` in a sandbox holding ``tree``: the result and the dependency
    file. Its init is pinned before its command is sent, as for every job."""
    started_at = time.monotonic()
    deps = f"/tmp/distlb-deps-{secrets.token_hex(8)}.d"
    ready: Started | None = None
    try:
        prepare = functools.partial(
            write_tree, tree=tree, output_dir=posixpath.dirname(job.output_path)
        )
        kind = sealed_kind(sandbox.sealed_kinds, compiler_path, job.argv)
        layout = functools.partial(
            layout_for, tree=tree, compiler_path=compiler_path, sealed=kind is not None
        )
        ready = (
            spawn(sandbox, jobs_root, None, prepare, kind, layout)
            if _small(tree)  # (a few files and a fork: about a millisecond, as plain jobs)
            else await asyncio.to_thread(spawn, sandbox, jobs_root, None, prepare, kind, layout)
        )
        try:
            await pin_waiting(ready)
            sandbox.renice_waiting(ready.proc.pid)
            await send_command(ready, job.command(compiler_path, deps))
        except BaseException:
            kill(ready)  # (nothing of the job ran; its directory goes below)
            raise
        result = await run_started(
            ready, "root" + job.output_path, sandbox, limits, client_gone, started_at
        )
        if result.outcome != "ok":
            return result, b""
        read = await asyncio.to_thread(
            read_output, ready.job_dir, "root" + deps, limits.max_output_bytes
        )
        if isinstance(read, NoObject):
            result.outcome, result.status, result.obj = "compile_error", exit_status(1), b""
            result.stderr += f"distlb-server: the dependency file: {read.reason}\n".encode()
            return result, b""
        return result, read
    finally:
        if ready is not None:
            await give_back(sandbox, ready)


async def serve_pump(
    ctx: PumpContext,
    request: PumpRequest,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    started: float,
) -> None:
    """Judge, compile and answer one pump request (or answer why not, in protocol 3)."""
    stats = ctx.stats
    try:
        job, tree, compiler_path = await _accept(ctx, request)
    except Refused as exc:
        await answer_refusal(stats, writer, request.protocol, request.argv, exc, started,
                             ctx.io_timeout_s, pump=True)  # fmt: skip
        return
    if _changed(ctx, job, compiler_path):
        # Its compiler or system headers are not those the server reported: turned away
        # (a balancer sends it elsewhere) while it reads them again.
        log.warning("turned_away", reason="compiler or system headers changed, reading "
                    "them again", pump=True)  # fmt: skip
        stats.counters.rejected_busy += 1
        ctx.on_upgrade()
        return
    holder = address_text(writer.get_extra_info("peername"))
    if not stats.slots.try_acquire(holder):
        stats.counters.rejected_busy += 1
        stats.activity.turned_away()
        turn_away_busy(stats.slots)
        return
    slot = SlotHold(stats.slots, holder)
    context = structlog.contextvars.get_contextvars()
    job_id = str(context.get("job_id", ""))
    client = str(context.get("principal") or context.get("client") or "")
    stats.activity.started(job_id, job.input_path, job.compiler, client)
    stats.counters.accepted += 1
    stats.counters.pump += 1
    gone = asyncio.ensure_future(wait_peer_gone(reader))
    try:
        try:
            result, deps = await run_pump(
                job, compiler_path, tree, jobs_root=ctx.jobs_root, sandbox=ctx.sandbox,
                limits=ctx.run_limits, client_gone=gone,
            )  # fmt: skip
        except OSError as exc:  # (its sandbox could not start: answered, not crashed)
            log.exception("job_not_started", reason=str(exc), pump=True)
            why = f"distlb-server: the job's sandbox did not start: {exc}\n".encode()
            result = CompileResult("compile_error", exit_status(1), why, b"", b"", 0, 0.0)
            deps = b""
        outcome: str = result.outcome
        sent = 0
        if result.limit is not None:
            stats.limit_hit(result.limit)
        if outcome != "client_disconnect" and _changed(ctx, job, compiler_path):
            # Changed while it ran: its object may be of the new files, and a balancer
            # would store it under the old ones' fingerprint. Dropped, as a turn-away.
            log.warning("job_dropped", reason="compiler or system headers changed while "
                        "it ran", pump=True)  # fmt: skip
            outcome = "other"
            ctx.on_upgrade()
        elif outcome != "client_disconnect":
            # Its slot back before the reply is sent, as a plain job's (in the budget): a
            # client with its reply may send its next job at once (make -jN vs --jobs N).
            held = len(result.obj) + len(result.stderr) + len(result.stdout) + len(deps)
            budgeted = ctx.replies.try_take(held)
            if budgeted:
                slot.release()
            reply = Reply(request.protocol, result.status, result.stderr, result.stdout,
                          result.obj, deps)  # fmt: skip
            try:
                sent = await write_reply(writer, reply, ctx.io_timeout_s)
            except (ConnectionError, TimeoutError):
                outcome = "client_disconnect"
            finally:
                if budgeted:
                    ctx.replies.give_back(held)
    finally:
        gone.cancel()
        slot.release()
        stats.activity.ended(job_id)
    seconds = time.monotonic() - started
    stats.job_finished(outcome, job.input_path, job.compiler, seconds)
    log.info(
        "job_done", outcome=outcome, pump=True, status=result.status,
        ms=round(seconds * 1000, 1), compile_ms=round(result.seconds * 1000, 1),
        protocol=request.protocol, files=len(tree.files), bytes_out=sent,
    )  # fmt: skip


def _changed(ctx: PumpContext, job: PumpJob, compiler_path: str) -> bool:
    """Whether the job's sealed toolchain or any system header changed since the server
    read them (server/pump_headers.py)."""
    kind = sealed_kind(ctx.sandbox.sealed_kinds, compiler_path, job.argv)
    upgraded = kind is not None and ctx.sandbox.upgraded(kind)
    return upgraded or (ctx.headers_watch is not None and ctx.headers_watch.changed())


async def _accept(ctx: PumpContext, request: PumpRequest) -> tuple[PumpJob, Tree, str]:
    """The job, its tree and its compiler's path, or :class:`Refused`."""
    if not ctx.pump:
        raise Refused("pump mode is off on this server (--pump off): the client "
                      "preprocesses and compiles this file itself")  # fmt: skip
    if ctx.sandbox.mode != "bwrap":
        raise Refused("pump mode is served only in a sandbox (--sandbox bwrap): the "
                      "client's files are written at their own paths there")  # fmt: skip
    if not request.argv:
        raise Refused("empty command")
    name = normalize_compiler(request.argv[0])
    compiler_path = ctx.compilers.get(name)
    if compiler_path is None:
        raise CompilerMissing(name)
    if name not in ctx.pump_dirs:  # (a wrapper script is not run outside its sandbox to ask)
        raise Refused(f"pump mode is served for gcc and clang drivers only, not {name!r}")
    # Any compiler's: one include server sends the system links of every compiler its
    # build has used so far (gcc's with a clang job), each a system directory here too.
    system = sorted({d for dirs in ctx.pump_dirs.values() for d in dirs})
    tops, paths = reserved(ctx.sandbox)
    accept = functools.partial(
        accept_pump, ctx.judge, request, system, tops, paths, ctx.pump_dirs[name]
    )
    small = (
        len(request.entries) <= SMALL_FILES
        and _bytes(request) <= LOOP_CODEC_BYTES
        and len(request.argv) <= LOOP_ARGS
        and sum(map(len, request.argv)) <= LOOP_ARG_BYTES
    )
    job, tree = accept() if small else await asyncio.to_thread(accept)
    return job, tree, compiler_path


SMALL_FILES = 64
"""A pump request of at most this many files (and :data:`wire.stream.LOOP_CODEC_BYTES`,
and a command line the plain judge would judge on the loop) is checked and judged on
the event loop, and its tree written there when it also makes few directories: handing
it to a thread and back cost more than the work (a thread hop each, under load)."""


def _bytes(request: PumpRequest) -> int:
    return sum(len(e.body) for e in request.entries)


def _small(tree: Tree) -> bool:
    """(Directories too: 64 names 64 deep would be 4,096 to make.)"""
    return (
        len(tree.files) + len(tree.links) <= SMALL_FILES
        and len(tree.directories) <= 4 * SMALL_FILES
        and sum(len(b) for _, b in tree.files) <= LOOP_CODEC_BYTES
    )
