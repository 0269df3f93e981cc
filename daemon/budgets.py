"""Bytes a client can make a daemon hold, bounded across its connections.

A :class:`ByteBudget` counts the bytes held against one bound, with the requests that
wait for room served in arrival order (one larger than the whole bound may still go,
alone). A :class:`Held` is one connection's share of its daemon's budgets, given back
whole when the connection ends, however it ends. :class:`InflateBudget` inflates LZO
sources in a thread within its budget, and, given the connection's :class:`Held`,
keeps the inflated source counted until then (a source held while its job waits and
compiles is memory as much as one being inflated)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from wire import lzo
from wire.stream import Inflate, Reserve

LZO_MAX_RATIO = 256
"""No LZO1X stream inflates more than about 255:1 (a run of zeros: 225:1 with the
level distcc uses), so a compressed body of N bytes is given N x 256 at most."""
_SLACK_BYTES = 64 * 1024
WAIT_FROM_BYTES = 64 * 1024
"""A request grows its hold by this much or less (a token, an argument) without waiting
for room; a larger part (its source) waits: never a deadlock of half-held requests."""
ON_LOOP_INFLATE_BYTES = 256 * 1024
"""A compressed source of at most a quarter of this is inflated on the event loop, in
one try into at most this much; a larger one, or one that would inflate past it, in a
thread within the budget (as are large replies: wire.stream.LOOP_CODEC_BYTES)."""


class ByteBudget:
    """Bytes held at once against ``max_bytes`` (set by the flag ``flag``)."""

    def __init__(self, max_bytes: int, flag: str) -> None:
        self.max_bytes = max_bytes
        self.flag = flag
        self.in_use = 0
        self.waited = 0
        """Reservations that had to wait for room."""
        self.refused = 0
        """:meth:`try_take` calls that found no room."""
        self._waiters: OrderedDict[object, tuple[int, asyncio.Future[None]]] = OrderedDict()

    def snapshot(self) -> dict[str, int]:
        """What /status shows: bytes held now and the bound, requests waiting for room
        now, requests that waited, and those refused for want of room."""
        return {"bytes": self.in_use, "max": self.max_bytes, "waiting": len(self._waiters),
                "waited": self.waited, "refused": self.refused}  # fmt: skip

    async def reserve(self, need: int) -> None:
        """Hold ``need`` bytes, once there is room (in arrival order)."""
        if not self._waiters and (self.in_use + need <= self.max_bytes or self.in_use == 0):
            self.in_use += need
            return
        self.waited += 1
        token = object()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[token] = (need, future)
        try:
            await future
        except BaseException:
            if self._waiters.pop(token, None) is None and future.done() and not future.cancelled():
                self.give_back(need)  # reserved for us just as we were cancelled
            raise

    def resize(self, max_bytes: int) -> None:
        """A reload's bound: what is held stays held; waiters that fit now go on."""
        self.max_bytes = max_bytes
        self._wake()

    def take(self, size: int) -> None:
        """Count ``size`` bytes held already, room or not (a few, held anyway)."""
        self.in_use += size

    def try_take(self, size: int) -> bool:
        """Hold ``size`` bytes if they fit now (or nothing else is held); else False."""
        if self.in_use + size > self.max_bytes and self.in_use > 0:
            self.refused += 1
            return False
        self.in_use += size
        return True

    def give_back(self, size: int) -> None:
        self.in_use -= size
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            token, (need, future) = next(iter(self._waiters.items()))
            if future.done():  # cancelled while waiting: its task takes it off the queue
                del self._waiters[token]
                continue
            if self.in_use + need > self.max_bytes and self.in_use > 0:
                return
            del self._waiters[token]
            self.in_use += need
            future.set_result(None)


class Held:
    """What one connection holds of its daemon's budgets."""

    def __init__(self) -> None:
        self._shares: dict[ByteBudget, int] = {}
        self.waiting_for: ByteBudget | None = None
        """The budget this connection waits for room in now, if any."""

    def of(self, budget: ByteBudget) -> int:
        return self._shares.get(budget, 0)

    async def reserve(self, budget: ByteBudget, size: int) -> None:
        self.waiting_for = budget
        try:
            await budget.reserve(size)
        finally:
            self.waiting_for = None
        self._shares[budget] = self.of(budget) + size

    def take(self, budget: ByteBudget, size: int) -> None:
        budget.take(size)
        self._shares[budget] = self.of(budget) + size

    def give_back(self, budget: ByteBudget, size: int) -> None:
        size = min(size, self.of(budget))
        self._shares[budget] = self.of(budget) - size
        budget.give_back(size)

    async def grow(self, budget: ByteBudget, total: int) -> None:
        """Hold ``total`` bytes of ``budget`` in all: what is more than held now is
        reserved, waiting for room if it is more than :data:`WAIT_FROM_BYTES`."""
        more = total - self.of(budget)
        if more > WAIT_FROM_BYTES:
            await self.reserve(budget, more)
        elif more > 0:
            self.take(budget, more)

    def reading(
        self, requests: ByteBudget, inflate_budget: InflateBudget
    ) -> tuple[Reserve, Inflate]:
        """``reserve`` and ``inflate`` for :func:`wire.stream.read_request`: the bytes
        of the request held against ``requests`` as it is read (a source's claimed
        length before any byte of it is read), an LZO source inflated within
        ``inflate_budget``, its compressed bytes given back once it is."""

        async def reserve(total: int) -> None:
            await self.grow(requests, total)

        async def inflate(data: bytes, max_size: int) -> bytes:
            source = await inflate_budget.inflate(data, max_size, self)
            self.give_back(requests, len(data))
            return source

        return reserve, inflate

    def release(self) -> None:
        """Give back everything held (the connection has ended)."""
        shares, self._shares = self._shares, {}
        for budget, size in shares.items():
            if size:
                budget.give_back(size)


class InflateBudget(ByteBudget):
    """Bounds the bytes LZO sources may inflate to, and inflates them in a thread: a
    1.2 MB request that inflates to 256 MiB neither stops the event loop nor, three at
    once, exhausts memory. Requests wait their turn in arrival order."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(max_bytes, "--max-inflating-mb")

    async def inflate(self, data: bytes, max_size: int, held: Held | None = None) -> bytes:
        """Decompress ``data`` into at most ``max_size`` bytes. With ``held`` (the
        connection's), the source stays counted, as held by it, until it gives it
        back; without, only while it inflates. Raises what :func:`wire.lzo.decompress`
        raises (a corrupt stream, a limit passed)."""
        if len(data) <= ON_LOOP_INFLATE_BYTES // 4 and max_size >= ON_LOOP_INFLATE_BYTES:
            # Most C sources: inflated here, once, into one buffer of the cap (the work
            # stops where the output would pass it: a quarter of a millisecond at most).
            # A thread's round trip, and the GIL handed back and forth, cost more.
            source = lzo.decompress_within(data, ON_LOOP_INFLATE_BYTES, "DOTI")
            if source is not None:
                if held is not None:
                    held.take(self, len(source))  # (small: counted, never waits)
                return source
        need = min(max_size, len(data) * LZO_MAX_RATIO + _SLACK_BYTES)
        holder = held if held is not None else Held()
        await holder.reserve(self, need)
        try:
            source = await asyncio.to_thread(lzo.decompress, data, need, "DOTI")
        except BaseException:
            holder.give_back(self, need)
            raise
        holder.give_back(self, need - len(source) if held is not None else need)
        return source


def not_in_time(held: Held) -> str:
    """Why a request was not read within the request timeout: the budget it waited
    for room in, if it did."""
    budget = held.waiting_for
    if budget is None:
        return "request not received in time"
    return (
        f"no room within the request timeout: {budget.in_use >> 20} MB of "
        f"{budget.max_bytes >> 20} held ({budget.flag})"
    )
