"""One connection's life: access, admission, request, policy, compile, reply."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import structlog

from cache import (
    CachedResult,
    CompilerIdentity,
    JobDigest,
    ResultCache,
    digest_off_loop,
    why_not_cacheable,
)
from client import address_text
from client.prober import is_probe
from daemon.access import Network
from daemon.admission import connection_scope
from daemon.bounds import ConnectionLimits, RefusalLog
from daemon.budgets import ByteBudget, Held, InflateBudget, not_in_time
from daemon.gss import Acceptor
from daemon.judge import Job, Judge, Refused, judge_off_loop
from server.admission import admit, turn_away_busy
from server.pump import serve_pump
from server.pump_headers import HeadersWatch
from server.refusals import answer_refusal
from server.runner import RunLimits, run_compile
from server.sandbox.launcher import Sandbox
from server.sandbox.sealed import sealed_kind
from server.sandbox.warm import WarmPool
from server.slots import ReplyBudget, SlotHold
from server.stats import ServerStats
from wire import Limits, RemoteProtocolError, Reply, Request
from wire.events import PumpRequest
from wire.stream import read_request, wait_peer_gone, write_reply

log = structlog.get_logger("distlb.server.job")
_BAD_REQUESTS = RefusalLog(log, "bad_request")


def _client() -> str:
    return str(structlog.contextvars.get_contextvars().get("client", "?"))


def _nothing() -> None:
    pass


@dataclass(frozen=True)
class ConnectionContext:
    """What every job needs from the server; built once at startup."""

    stats: ServerStats
    compilers: Mapping[str, str]
    judge: Judge
    allow: Sequence[Network]
    wire_limits: Limits
    run_limits: RunLimits
    sandbox: Sandbox
    jobs_root: str
    connections: ConnectionLimits
    inflate: InflateBudget
    requests: ByteBudget
    """Bytes of requests held as they arrive (--request-memory-mb)."""
    replies: ReplyBudget
    io_timeout_s: float
    request_timeout_s: float
    first_byte_timeout_s: float = 10.0
    """A connection that sends nothing this long after it is accepted is closed."""
    cache: ResultCache | None = None
    identities: Mapping[str, CompilerIdentity] = field(default_factory=dict)
    share_across_dirs: bool = False
    """--cache-share-across-dirs: debug builds without prefix maps share across checkouts."""
    acceptor: Acceptor | None = None
    """With --auth: the GSSAPI handshake and principal lists, before admission."""
    warm: WarmPool | None = None
    """Sandboxes started ahead of their jobs (with --sandbox bwrap)."""
    on_upgrade: Callable[[], None] = _nothing
    """Called when a compiler's files are found upgraded: identify them again."""
    pump: bool = True
    """--pump: serve protocol 3 (server/pump.py); off, it is answered with why."""
    pump_dirs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Per compiler served in pump mode, its system include directories."""
    headers_watch: HeadersWatch | None = None
    """Says when those directories change (server/pump_headers.py)."""


async def handle_connection(
    ctx: ConnectionContext, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Serve one distcc connection. Never raises: every end is counted and logged."""
    stats = ctx.stats
    held = Held()  # what the job holds of the byte budgets, until it ends
    async with connection_scope(writer) as address:
        stats.counters.connections += 1
        try:
            refused = await admit(address, ctx.allow, ctx.acceptor, stats.slots, reader, writer)
            if refused is not None:
                setattr(stats.counters, refused, getattr(stats.counters, refused) + 1)
                return
            await _serve_job(ctx, reader, writer, held)
        except asyncio.CancelledError:
            # Only shutdown cancels jobs; run_compile has killed the compiler by now.
            stats.counters.other += 1
            log.warning("job_cancelled", reason="server shutting down")
            raise
        except Exception:
            stats.counters.other += 1
            log.exception("job_crashed")
        finally:
            held.release()


async def _serve_job(
    ctx: ConnectionContext,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    held: Held,
) -> None:
    started = time.monotonic()
    stats = ctx.stats
    reserve, inflate = held.reading(ctx.requests, ctx.inflate)
    try:
        async with asyncio.timeout(ctx.request_timeout_s):
            request = await read_request(
                reader,
                ctx.wire_limits,
                idle_timeout_s=ctx.io_timeout_s,
                inflate=inflate,
                reserve=reserve,
                first_byte_timeout_s=ctx.first_byte_timeout_s,
            )
    except RemoteProtocolError as exc:
        stats.job_finished("bad_request", "?", "?", time.monotonic() - started)
        _BAD_REQUESTS.refused(str(exc), _client(), error=type(exc).__name__)
        return
    except TimeoutError:
        stats.job_finished("bad_request", "?", "?", time.monotonic() - started)
        _BAD_REQUESTS.refused(not_in_time(held), _client())
        return
    if isinstance(request, PumpRequest):
        await serve_pump(ctx, request, reader, writer, started)
        return

    # A health probe (client/prober.py's exact request: command line and source) is
    # counted apart from jobs and logs its job_done at debug: balancers probe every
    # server every few seconds. Any client may send that request, and that is safe: it
    # changes only the level of its job_done line and the counter that counts it (and,
    # as for any probe, the cache is skipped: a real compile). It is judged, sandboxed
    # and bounded like any job and counted as a connection, and being the probe's exact
    # source it compiles nothing but the probe: no real work can hide in it.
    probe = is_probe(request)
    try:
        job = await judge_off_loop(ctx.judge, request.argv)
    except Refused as exc:
        await answer_refusal(stats, writer, request.protocol, request.argv, exc, started,
                             ctx.io_timeout_s, probe=probe)  # fmt: skip
        return

    structlog.contextvars.bind_contextvars(compiler=job.compiler, input=job.input_name)
    request = Request(request.protocol, job.argv, request.source)
    sealed = sealed_kind(ctx.sandbox.sealed_kinds, ctx.compilers[job.compiler], job.argv)
    if sealed is not None and ctx.sandbox.upgraded(sealed):
        # Its files are not those identified (a package upgrade): turned away, as when
        # busy, neither compiled nor answered from the cache, while the server
        # identifies them again (a balancer sends it elsewhere).
        log.warning("turned_away", reason="compiler upgraded, identifying it again")
        stats.counters.rejected_busy += 1
        structlog.contextvars.unbind_contextvars("compiler", "input")
        ctx.on_upgrade()
        return
    # (A probe must show that the compiler runs: never answered from the cache.)
    cached = None if probe else await _cache_job(ctx, request, job)
    try:
        if cached is not None and await _reply_from_cache(ctx, request, cached, writer, started):
            return
        holder = address_text(writer.get_extra_info("peername"))
        if not stats.slots.try_acquire(holder, probe=probe):
            if probe:
                stats.probes["rejected_busy"] += 1
            else:
                stats.counters.rejected_busy += 1
                stats.activity.turned_away()
            turn_away_busy(stats.slots)
            return
        slot = SlotHold(stats.slots, holder)
        context = structlog.contextvars.get_contextvars()
        job_id = str(context.get("job_id", ""))
        client = str(context.get("principal") or context.get("client") or "")
        stats.activity.started(job_id, job.input_name, job.compiler, client)
        try:
            if not probe:
                stats.counters.accepted += 1
            await _compile_and_reply(
                ctx, request, job, reader, writer, started, slot, cached, probe, sealed
            )
        finally:
            slot.release()
            stats.activity.ended(job_id)
    finally:
        structlog.contextvars.unbind_contextvars("compiler", "input")


async def _cache_job(
    ctx: ConnectionContext, request: Request, job: Job
) -> tuple[JobDigest, CompilerIdentity] | None:
    """The job's digests (off the loop for a big source) and the identity its result is
    kept under (None: not cached)."""
    identity = ctx.identities.get(job.compiler)
    if ctx.cache is None or identity is None or why_not_cacheable(request.argv) is not None:
        return None
    digest = await digest_off_loop(request, ctx.share_across_dirs)
    return (digest, identity) if digest.uncacheable is None else None


async def _reply_from_cache(
    ctx: ConnectionContext,
    request: Request,
    cached: tuple[JobDigest, CompilerIdentity],
    writer: asyncio.StreamWriter,
    started: float,
) -> bool:
    """Answer from the local cache (no slot needed); False on a miss."""
    assert ctx.cache is not None
    result = await ctx.cache.lookup(*cached)
    if result is None:
        ctx.cache.note_miss(cached[0], [cached[1]])
        return False
    # Held for the client like a compiled reply (a client that never reads holds it up
    # to --io-timeout): past --reply-memory-mb, compiled instead, in a slot, which
    # bounds what waits for such readers (a review's 12 idle readers of a cached 40 MB
    # object held 800 MB).
    held = len(result.obj) + len(result.stderr) + len(result.stdout)
    if not ctx.replies.try_take(held):
        log.info("cache_hit_not_held", bytes=held, reason="no room in --reply-memory-mb")
        return False
    reply = Reply(request.protocol, 0, result.stderr, result.stdout, result.obj)
    try:
        sent = await write_reply(writer, reply, ctx.io_timeout_s)
        outcome = "ok"
    except (ConnectionError, TimeoutError):
        sent, outcome = 0, "client_disconnect"
    finally:
        ctx.replies.give_back(held)
    seconds = time.monotonic() - started
    ctx.stats.counters.cache_hit += 1
    ctx.stats.job_finished(outcome, "?", request.argv[0], seconds)
    log.info(
        "job_done",
        outcome=outcome,
        cached=True,
        ms=round(seconds * 1000, 1),
        protocol=request.protocol,
        bytes_in=len(request.source),
        bytes_out=sent,
    )
    return True


async def _compile_and_reply(
    ctx: ConnectionContext,
    request: Request,
    job: Job,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    started: float,
    slot: SlotHold,
    cached: tuple[JobDigest, CompilerIdentity] | None,
    probe: bool,
    sealed: str | None,
) -> None:
    stats = ctx.stats
    compiler_path = ctx.compilers[job.compiler]
    gone = asyncio.ensure_future(wait_peer_gone(reader))
    try:
        result = await run_compile(
            job,
            compiler_path,
            request.source,
            jobs_root=ctx.jobs_root,
            sandbox=ctx.sandbox,
            limits=ctx.run_limits,
            client_gone=gone,
            warm=ctx.warm,
            sealed=sealed,
        )
    finally:
        gone.cancel()
    if sealed is not None and ctx.sandbox.upgraded(sealed):
        # Upgraded while it ran: its object may be the new compiler's, and no one may
        # take it for the identified one's (a balancer would store it under that).
        # Dropped unanswered, as a turn-away: the client compiles it again.
        log.warning("job_dropped", reason="its compiler was upgraded while it ran")
        stats.job_finished("other", job.input_name, job.compiler, time.monotonic() - started)
        ctx.on_upgrade()
        return
    held = len(result.obj) + len(result.stderr) + len(result.stdout)
    budgeted = ctx.replies.try_take(held)
    if budgeted:
        slot.release()
    outcome = result.outcome
    if result.limit is not None:
        stats.limit_hit(result.limit)
        log.warning("job_limit", limit=result.limit, status=result.status)
    # Stored only from a sealed sandbox (with --sandbox bwrap): there the compile could
    # read nothing its key leaves out (server/sandbox/sealed.py).
    storable = sealed is not None or ctx.sandbox.mode != "bwrap"
    if cached is not None and ctx.cache is not None and outcome == "ok" and storable:
        ctx.cache.store(*cached, CachedResult(result.obj, result.stderr, result.stdout))
    sent = 0
    if outcome != "client_disconnect":
        reply = Reply(request.protocol, result.status, result.stderr, result.stdout, result.obj)
        try:
            sent = await write_reply(writer, reply, ctx.io_timeout_s)
        except (ConnectionError, TimeoutError):
            outcome = "client_disconnect"
        finally:
            if budgeted:
                ctx.replies.give_back(held)
    elif budgeted:
        ctx.replies.give_back(held)
    slot.release()
    seconds = time.monotonic() - started
    stats.job_finished(outcome, job.input_name, job.compiler, seconds, probe=probe)
    emit = log.debug if probe else log.info
    emit(
        "job_done",
        outcome=outcome,
        probe=probe,
        status=result.status,
        ms=round(seconds * 1000, 1),
        compile_ms=round(result.seconds * 1000, 1),
        protocol=request.protocol,
        bytes_in=len(request.source),
        bytes_out=sent,
    )
