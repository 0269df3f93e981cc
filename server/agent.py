"""HAProxy agent-check: one line per connection saying how much room we have."""

from __future__ import annotations

import asyncio
import contextlib

from server.admission import Slots


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
    slots: Slots, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    with contextlib.suppress(ConnectionError):
        writer.write(agent_line(slots).encode("ascii"))
        async with asyncio.timeout(5.0):
            await writer.drain()
    writer.close()
