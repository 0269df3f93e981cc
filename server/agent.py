"""HAProxy agent-check: one line per connection saying how much room we have, to the
addresses --allow lets compile (anyone else is closed unanswered)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import structlog

from daemon.access import Network, is_allowed
from daemon.bounds import RefusalLog
from server.slots import Slots

log = structlog.get_logger("distlb.server.agent")
_REFUSALS = RefusalLog(log, "agent_refused")


def agent_line(slots: Slots) -> str:
    """``up 50% maxconn:8`` style answer; ``drain`` while shutting down.

    The weight is the share of free slots, so HAProxy sends less to a busy
    server; 0% (a full server) shows as drain in HAProxy until slots free up.
    """
    if not slots.accepting:
        return "drain maxconn:0\n"
    percent = 100 * slots.free // slots.capacity
    return f"up {percent}% maxconn:{slots.capacity}\n"


async def serve_agent(
    slots: Slots,
    allow: Sequence[Network],
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    peer = writer.get_extra_info("peername")
    address = str(peer[0]) if peer else "?"
    if not is_allowed(address, allow):
        _REFUSALS.refused("address not allowed (--allow)", address)
        writer.close()
        return
    with contextlib.suppress(ConnectionError):
        writer.write(agent_line(slots).encode("ascii"))
        async with asyncio.timeout(5.0):
            await writer.drain()
    writer.close()
