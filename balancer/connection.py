"""One client connection: access, read the whole request, dispatch, reply (or close)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from balancer.dispatch.dispatcher import Dispatcher
from balancer.dispatch.pump import PumpRoute, route_pump
from balancer.errors import NoCapacity, NoCompiler, NotDispatched
from balancer.observe.stats import BalancerStats
from daemon.access import Network
from daemon.admission import connection_scope, refusal
from daemon.bounds import JOB_REFUSAL_LOG_BURST, RefusalLog
from daemon.budgets import ByteBudget, Held, InflateBudget, not_in_time
from daemon.gss import Acceptor
from daemon.judge import Judge, Refused, judge_off_loop
from daemon.logged import bounded_argv
from wire import Limits, RemoteProtocolError, Reply, Request, encode_reply
from wire.events import PumpRequest, exit_status
from wire.stream import drain_within, encode_reply_off_loop, read_request, wait_peer_gone

log = structlog.get_logger("distlb.balancer.job")
_JOB_REFUSALS = RefusalLog(log, "job_refused", JOB_REFUSAL_LOG_BURST)
_BAD_REQUESTS = RefusalLog(log, "bad_request")


@dataclass(frozen=True)
class ConnectionContext:
    stats: BalancerStats
    dispatcher: Dispatcher
    allow: Sequence[Network]
    limits: Limits
    io_timeout_s: float
    request_timeout_s: float
    first_byte_timeout_s: float = 10.0
    """A connection that sends nothing this long after it is accepted is closed."""
    acceptor: Acceptor | None = None
    """With --auth: the GSSAPI handshake and principal lists, before the request."""
    judge: Judge = field(default_factory=Judge)
    """The argument judge: a refused job never reaches a backend."""
    replies: ByteBudget = field(default_factory=lambda: ByteBudget(1 << 30, "--reply-memory-mb"))
    """Replies held for clients until they have taken them."""
    inflate: InflateBudget = field(default_factory=lambda: InflateBudget(1 << 30))
    """Where LZO sources are inflated: off the loop, within a budget."""
    requests: ByteBudget = field(default_factory=lambda: ByteBudget(1 << 30, "--request-memory-mb"))
    """Bytes of requests held as they arrive."""


async def handle_connection(
    ctx: ConnectionContext, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Serve one distcc client. Never raises; every end is counted and logged once."""
    held = Held()  # what the job holds of the byte budgets, until it ends
    async with connection_scope(writer) as address:
        ctx.stats.counters.connections += 1
        started = time.monotonic()
        try:
            refused = await refusal(address, ctx.allow, ctx.acceptor, reader, writer)
            if refused is not None:
                # Nothing of the job is read: the real client compiles locally (or
                # fails, with DISTCC_FALLBACK=0).
                setattr(ctx.stats.counters, refused, getattr(ctx.stats.counters, refused) + 1)
                return
            await _serve(ctx, reader, writer, started, held)
        except Exception:
            log.exception("job_crashed")
        finally:
            held.release()
            ctx.stats.activity.forget()  # (a job that crashed is not shown running forever)
            structlog.contextvars.unbind_contextvars("input")


async def _serve(
    ctx: ConnectionContext,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    started: float,
    held: Held,
) -> None:
    stats = ctx.stats
    reserve, inflate = held.reading(ctx.requests, ctx.inflate)
    try:
        async with asyncio.timeout(ctx.request_timeout_s):
            request = await read_request(
                reader,
                ctx.limits,
                idle_timeout_s=ctx.io_timeout_s,
                inflate=inflate,
                reserve=reserve,
                first_byte_timeout_s=ctx.first_byte_timeout_s,
            )
    except (RemoteProtocolError, TimeoutError) as exc:
        reason = str(exc) if isinstance(exc, RemoteProtocolError) else not_in_time(held)
        stats.job_finished("bad_request", time.monotonic() - started, reason=reason)
        client = str(structlog.contextvars.get_contextvars().get("client", "?"))
        _BAD_REQUESTS.refused(reason, client, error=type(exc).__name__)
        return

    read_ms = round((time.monotonic() - started) * 1000, 1)
    pump: PumpRoute | None = None
    try:
        if isinstance(request, PumpRequest):
            # Judged and checked here as a server would (a refused one never reaches a
            # backend), then sent only where pump is served with its system headers.
            request, pump = await route_pump(
                list(ctx.dispatcher.pool.backends.values()), ctx.judge, request,
                keyed=ctx.dispatcher.caching is not None,
            )  # fmt: skip
            input_name, compiler = pump.input_name, pump.compiler
            stats.counters.pump += 1
        else:
            accepted = await judge_off_loop(ctx.judge, request.argv)
            # Backends get the canonical command line the judge accepted (bare compiler
            # name, -x rewritten to the preprocessed language), for distlb and distccd.
            request = Request(request.protocol, accepted.argv, request.source)
            input_name, compiler = accepted.input_name, accepted.compiler
    except Refused as exc:
        await _refuse(ctx, writer, request, exc, started)
        return
    # The input file's name as the judge found it, on every line from here (the
    # server's lines name it alike).
    structlog.contextvars.bind_contextvars(input=input_name)
    stats.counters.accepted += 1
    context = structlog.contextvars.get_contextvars()
    live = stats.activity.start(
        str(context.get("job_id", "")),
        str(context.get("principal") or context.get("client") or ""),
        input_name,
        compiler,
    )
    base = {
        "bytes_in": len(request.source) if pump is None else len(pump.encoded),
        "protocol": request.protocol,
        "compiler": request.argv[0],
        "read_ms": read_ms,  # from accept to the whole request (the client's cpp runs meanwhile)
    }
    # The job is dispatched in this task; a client that leaves meanwhile cancels it
    # (which drops the backend call). One task watches the client, none more per job.
    me = asyncio.current_task()
    assert me is not None
    dispatching = True

    def left(watch: asyncio.Task[None]) -> None:
        if dispatching and not watch.cancelled():
            me.cancel()

    gone = asyncio.create_task(wait_peer_gone(reader))
    gone.add_done_callback(left)
    try:
        # The bytes every attempt sends (retries and hedges share one copy: a review
        # saw each hold its own, outside the budget) are counted with the request's.
        who = ctx.dispatcher.fair.who(
            str(context.get("client", "")), str(context.get("principal") or "") or None
        )
        outcome = await ctx.dispatcher.dispatch(
            request, lambda size: held.take(ctx.requests, size), live.watch, pump, who
        )
    except asyncio.CancelledError:
        if not gone.done() or gone.cancelled():
            raise  # (not the client: we are being shut down)
        me.uncancel()
        stats.job_finished("client_disconnect", time.monotonic() - started, live)
        # (where it was when its client left: every attempt so far, or none)
        attempts = live.attempts.describe() if live.attempts is not None else []
        log.info(
            "job_done",
            outcome="client_disconnect",
            tries=attempts,
            **base,
            ms=round((time.monotonic() - started) * 1000, 1),
        )
        return
    except NotDispatched as exc:
        # Closing without a reply makes the real client compile locally.
        name = (
            "turned_away" if isinstance(exc, NoCapacity)
            else "no_compiler" if isinstance(exc, NoCompiler)
            else "failed"
        )  # fmt: skip
        stats.job_finished(name, time.monotonic() - started, live, reason=str(exc))
        log.warning(
            "job_done",
            outcome=name,
            reason=str(exc),
            tries=exc.history,
            **base,
            ms=round((time.monotonic() - started) * 1000, 1),
        )
        return
    finally:
        dispatching = False
        gone.cancel()
    result = "ok" if outcome.reply.status == 0 else "compile_error"
    reply_size = _size(outcome.reply)
    # Held until the client has taken it (one that does not read holds it up to
    # --io-timeout): past the budget, the job is not answered, and the client compiles
    # locally. Not reading the backend's reply instead would hold its slot, and its
    # transfer deadline would count a healthy backend as failing.
    room = 2 * reply_size + reply_size // 16 + 1024  # the reply and its encoding
    if not ctx.replies.try_take(room):
        reason = (
            f"no room to hold its reply of {reply_size} bytes: {ctx.replies.in_use >> 20}"
            f" MB of {ctx.replies.max_bytes >> 20} held for clients (--reply-memory-mb)"
        )
        stats.job_finished("reply_refused", time.monotonic() - started, live,
                           backend=outcome.backend, reason=reason)  # fmt: skip
        log.warning("job_done", outcome="reply_refused", reason=reason, backend=outcome.backend,
                    backend_conn=outcome.backend_conn, tries=outcome.history,
                    **base, ms=round((time.monotonic() - started) * 1000, 1))  # fmt: skip
        return
    try:
        data = await encode_reply_off_loop(outcome.reply)
        if outcome.cached:
            stats.counters.cache_hit += 1
        try:
            writer.write(data)
            await drain_within(writer, ctx.io_timeout_s)
        except (ConnectionError, TimeoutError):
            result = "client_disconnect"
    finally:
        ctx.replies.give_back(room)
    seconds = time.monotonic() - started
    stats.job_finished(
        result, seconds, live, backend=outcome.backend, queued_s=outcome.queued_s,
        cached=outcome.cached,
    )  # fmt: skip
    log.info(
        "job_done",
        outcome=result,
        backend=outcome.backend,
        backend_conn=outcome.backend_conn,
        attempts=outcome.attempts,
        hedged=outcome.hedged,
        tries=outcome.history,
        cached=outcome.cached,
        queue_ms=round(outcome.queued_s * 1000, 1),
        bytes_out=len(data),
        ms=round(seconds * 1000, 1),
        **base,
    )


def _size(reply: Reply) -> int:
    return len(reply.obj) + len(reply.stderr) + len(reply.stdout) + len(reply.deps)


async def _refuse(
    ctx: ConnectionContext,
    writer: asyncio.StreamWriter,
    request: Request | PumpRequest,
    refused: Refused,
    started: float,
) -> None:
    """Answer a job the judge refused with its reason (the real client shows it, then
    compiles locally unless DISTCC_FALLBACK=0); no backend sees it."""
    message = refused.message("distlb-balancer").encode("utf-8", "replace")
    reply = Reply(request.protocol, exit_status(refused.exit_code), message, b"", b"")
    with contextlib.suppress(ConnectionError, TimeoutError):
        writer.write(encode_reply(reply))
        async with asyncio.timeout(ctx.io_timeout_s):
            await writer.drain()
    ctx.stats.job_finished("rejected_policy", time.monotonic() - started, reason=refused.reason)
    client = str(structlog.contextvars.get_contextvars().get("client", "?"))
    _JOB_REFUSALS.refused(refused.reason, client, argv=bounded_argv(request.argv))
