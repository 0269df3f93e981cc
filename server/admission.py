"""Admission, in this order: the address allowlist, then (with ``--auth``) the
GSSAPI handshake (daemon/admission.py, as the balancer does), then a free slot: a
connection that finds every slot busy is turned away at once, as distccd does (the
real client then compiles locally). The slot itself is taken only once the request
is read (server/connection.py)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from daemon.admission import refusal

if TYPE_CHECKING:
    from server.connection import ConnectionContext

log = structlog.get_logger("distlb.server.job")


async def admit(
    ctx: ConnectionContext,
    address: str,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> str | None:
    """None when the connection may send its request; else the counter it is refused
    under (``rejected_access``, ``rejected_auth``, ``rejected_busy``)."""
    refused = await refusal(address, ctx.allow, ctx.acceptor, reader, writer)
    if refused is not None:
        return refused
    if ctx.stats.slots.free == 0:
        turn_away_busy(ctx)
        return "rejected_busy"
    return None


def turn_away_busy(ctx: ConnectionContext) -> None:
    """Log a job turned away because every slot is busy (the caller counts it)."""
    log.info("turned_away", reason="busy", slots=ctx.stats.slots.capacity)


class Slots:
    """Counts busy job slots. Not thread-safe; lives on the event loop."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a server needs at least one slot, got {capacity}")
        self.capacity = capacity
        self.busy = 0
        self.busy_max = 0
        """The most slots ever busy at once (proof that a balancer never overfilled us)."""
        self._holders: Counter[str] = Counter()
        self._accepting = True
        self.on_change: Callable[[], None] | None = None
        """Called after every change of ``busy`` or ``accepting`` (the status long poll)."""

    @property
    def accepting(self) -> bool:
        return self._accepting

    @accepting.setter
    def accepting(self, value: bool) -> None:
        self._accepting = value
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    @property
    def free(self) -> int:
        return self.capacity - self.busy if self.accepting else 0

    @property
    def holders(self) -> list[str]:
        """Each busy slot's connection, by its client's ``IP:PORT`` (a balancer tells
        its own jobs from others' by these: in flight either way, a job it counts may
        not hold a slot yet, or no longer)."""
        return sorted(self._holders.elements())

    def try_acquire(self, holder: str = "?") -> bool:
        """Take a slot for the connection from ``holder`` if one is free and we are
        accepting work."""
        if not self.accepting or self.busy >= self.capacity:
            return False
        self.busy += 1
        self._holders[holder] += 1
        self.busy_max = max(self.busy_max, self.busy)
        self._changed()
        return True

    def release(self, holder: str = "?") -> None:
        if self.busy <= 0 or self._holders[holder] <= 0:
            raise RuntimeError(f"released a slot not taken by {holder}")
        self.busy -= 1
        self._holders[holder] -= 1
        if not self._holders[holder]:
            del self._holders[holder]
        self._changed()


class SlotHold:
    """One admitted job's slot; released once, as soon as the compile is over when its
    reply fits the reply budget (sending needs no slot, and a balancer may already send
    the next job), else once the reply is sent."""

    def __init__(self, slots: Slots, holder: str) -> None:
        self._slots: Slots | None = slots
        self._holder = holder

    def release(self) -> None:
        if self._slots is not None:
            self._slots.release(self._holder)
            self._slots = None
