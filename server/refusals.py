"""A job refused before it ran: counted, logged (bounded), answered with why."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

import structlog

from daemon.bounds import JOB_REFUSAL_LOG_BURST, RefusalLog
from daemon.judge import Refused
from daemon.logged import bounded_argv
from server.stats import ServerStats
from wire import Reply
from wire.events import exit_status
from wire.stream import write_reply

log = structlog.get_logger("distlb.server.job")
_JOB_REFUSALS = RefusalLog(log, "job_refused", JOB_REFUSAL_LOG_BURST)
"""One bound on refusal lines, plain and pump jobs alike."""


async def answer_refusal(
    stats: ServerStats,
    writer: asyncio.StreamWriter,
    protocol: int,
    argv: Sequence[str],
    refused: Refused,
    started: float,
    io_timeout_s: float,
    *,
    probe: bool = False,
    **logged: object,
) -> None:
    """Count ``refused`` as ``rejected_policy``, log it (``logged`` added to its line)
    and answer the client in its ``protocol`` with the reason (the real client shows it,
    then compiles locally); a client gone meanwhile is no error."""
    stats.job_finished("rejected_policy", "?", argv[0] if argv else "?",
                       time.monotonic() - started, probe=probe)  # fmt: skip
    client = str(structlog.contextvars.get_contextvars().get("client", "?"))
    _JOB_REFUSALS.refused(refused.reason, client, argv=bounded_argv(argv), **logged)
    message = refused.message("distlb-server").encode("utf-8", "replace")
    reply = Reply(protocol, exit_status(refused.exit_code), message, b"", b"")
    with contextlib.suppress(ConnectionError, TimeoutError):
        await write_reply(writer, reply, io_timeout_s)
