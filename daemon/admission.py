"""The start and end every connection of either daemon shares: a job id, the
client's address and the connection's ``peer`` (``IP:PORT``) on every log line, the
address allowlist, then (with ``--auth``) the GSSAPI handshake before anything of the
job is read; and, however the connection ends, the socket closed (waiting at most a
second) and the log context dropped."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
from collections.abc import AsyncIterator, Sequence

import structlog

from client import address_text
from daemon.access import Network, is_allowed
from daemon.bounds import RefusalLog
from daemon.gss import Acceptor

log = structlog.get_logger("distlb.admission")
_NOT_ALLOWED = RefusalLog(log, "turned_away")


def _job_ids() -> itertools.count[int]:
    return itertools.count(int.from_bytes(secrets.token_bytes(6)))


_JOB_IDS = _job_ids()
"""Job ids: a random start per process (drawn again in a forked balancer worker), then
counted: unique within a process, and across processes but by chance in 2**48 (a random
draw per job was a system call on every connection)."""


def _new_job_ids() -> None:
    global _JOB_IDS  # (the one counter of this process)
    _JOB_IDS = _job_ids()


os.register_at_fork(after_in_child=_new_job_ids)


def next_job_id() -> str:
    return f"{next(_JOB_IDS) & 0xFFFF_FFFF_FFFF:012x}"


@contextlib.asynccontextmanager
async def connection_scope(writer: asyncio.StreamWriter) -> AsyncIterator[str]:
    """Around serving one connection: yields the client's address. Every line of the
    job carries ``peer``, the client's ``IP:PORT``: a balancer logs the same pair as the
    attempt's ``backend_conn``, which joins its job to the server's (docs/operations.md)."""
    peer = writer.get_extra_info("peername") or ("?", 0)
    structlog.contextvars.bind_contextvars(
        job_id=next_job_id(), client=peer[0], peer=address_text(peer)
    )
    try:
        yield str(peer[0])
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await writer.wait_closed()
        structlog.contextvars.unbind_contextvars("job_id", "client", "peer", "principal")


async def refusal(
    address: str,
    allow: Sequence[Network],
    acceptor: Acceptor | None,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> str | None:
    """Why this client may not go on (``rejected_access``, ``rejected_auth``: the counter
    to count it under), or None. Authentication comes before any slot is taken: a peer
    that cannot authenticate holds none (handshakes are bounded in time and number)."""
    if not is_allowed(address, allow):
        _NOT_ALLOWED.refused("address not allowed", address)
        return "rejected_access"
    if acceptor is not None and not await acceptor.admit(reader, writer):
        return "rejected_auth"
    return None
