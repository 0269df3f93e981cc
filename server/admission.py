"""Admission, in this order: the address allowlist, then (with ``--auth``) the
GSSAPI handshake (daemon/admission.py, as the balancer does), then a free slot: a
connection that finds every slot busy is turned away at once, as distccd does (the
real client then compiles locally). The slot itself is taken only once the request
is read (server/connection.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from daemon.access import Network
from daemon.admission import refusal
from daemon.gss import Acceptor
from server.slots import Slots

log = structlog.get_logger("distlb.server.job")


async def admit(
    address: str,
    allow: Sequence[Network],
    acceptor: Acceptor | None,
    slots: Slots,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> str | None:
    """None when the connection from ``address`` may send its request; else the counter
    it is refused under (``rejected_access``, ``rejected_auth``, ``rejected_busy``)."""
    refused = await refusal(address, allow, acceptor, reader, writer)
    if refused is not None:
        return refused
    if slots.free == 0:
        turn_away_busy(slots)
        return "rejected_busy"
    return None


def turn_away_busy(slots: Slots) -> None:
    """Log a job turned away because every slot is busy (the caller counts it)."""
    if slots.refusing is not None:
        log.info("turned_away", reason=slots.refusing, slots=slots.capacity)
        return
    log.info("turned_away", reason="busy", slots=slots.capacity, offered=slots.offered)
