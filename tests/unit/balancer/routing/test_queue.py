"""Waiting for a slot (balancer/routing/queue.py) on a fake clock, without sockets or real time:
the wake order, the queue timeout over several waits, failing fast when nothing is in
rotation, and holding back for a faster backend (which does not spend the timeout and
ends once it no longer pays)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from balancer.errors import NoCapacity
from balancer.routing.queue import SlotQueue, acquire

pytestmark = pytest.mark.asyncio


@dataclass
class FakeTimer:
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class FakeClock:
    """Time moves only when a test says so; timers fire then, in order."""

    now: float = 1000.0
    _timers: list[tuple[float, int, FakeTimer, Callable[[], None]]] = field(default_factory=list)
    _order: itertools.count[int] = field(default_factory=itertools.count)

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer()
        heapq.heappush(self._timers, (self.now + delay, next(self._order), timer, callback))
        return timer

    def pending(self) -> int:
        return sum(1 for *_, timer, _ in self._timers if not timer.cancelled)

    async def advance(self, seconds: float) -> None:
        self.now += seconds
        while self._timers and self._timers[0][0] <= self.now:
            _, _, timer, callback = heapq.heappop(self._timers)
            if not timer.cancelled:
                callback()
        await settle()


async def settle() -> None:
    """Let every task that can run, run (no time passes)."""
    for _ in range(20):
        await asyncio.sleep(0)


@dataclass(frozen=True)
class B:
    name: str


SLOW, FAST = B("slow"), B("fast")


class SlotSourceForTests:
    """A job's way to a slot (balancer/routing/queue.py ``SlotSource``), from callables."""

    def __init__(
        self,
        pick: Callable[[], B | None],
        all_down: Callable[[], bool],
        queue_timeout_s: float,
        hold: Callable[[B, object], tuple[B, float, float] | None] | None = None,
        on_wait: Callable[[], None] | None = None,
        who: object = None,
        yields: Callable[[], bool] | None = None,
    ) -> None:
        self._pick, self._all_down, self._hold, self._on_wait = pick, all_down, hold, on_wait
        self.queue_timeout_s = queue_timeout_s
        self.who = who
        self._yields = yields
        self.registered = 0
        """Waits begun and not ended (fair share counts the job as waiting)."""

    def pick(self) -> B | None:
        return self._pick()

    def nothing_to_wait_for(self) -> bool:
        return self._all_down()

    def hold(self, chosen: B, token: object) -> tuple[B, float, float] | None:
        return self._hold(chosen, token) if self._hold is not None else None

    def waiting(self) -> None:
        if self._on_wait is not None:
            self._on_wait()

    def holding(self, target: B, instead_of: B) -> None:
        pass

    def reserve(self, backend: B) -> bool:
        return True

    def yields(self) -> bool:
        return self._yields is not None and self._yields()

    def wait_begins(self) -> None:
        self.registered += 1

    def wait_ends(self) -> None:
        self.registered -= 1


async def test_a_change_wakes_the_longest_waiting_first() -> None:
    queue = SlotQueue(FakeClock())
    woken: list[str] = []

    async def wait(name: str, since: float) -> None:
        await queue.wait(60, since)
        woken.append(name)

    tasks = [
        asyncio.ensure_future(wait(name, since))
        for name, since in (("newer", 2.0), ("oldest", 1.0), ("newest", 3.0), ("tie", 2.0))
    ]
    await settle()
    queue.notify()
    await asyncio.gather(*tasks)
    assert woken == ["oldest", "newer", "tie", "newest"]  # a tie: who asked first


async def test_the_queue_timeout_counts_every_wait_of_a_job() -> None:
    clock = FakeClock()
    queue = SlotQueue(clock)
    waits: list[float] = []
    how = SlotSourceForTests(
        pick=lambda: None,
        all_down=lambda: False,
        queue_timeout_s=10.0,
        on_wait=lambda: waits.append(clock.now),
    )
    waiting = queue.waiting(10.0)
    task = asyncio.ensure_future(acquire(queue, how, waiting))
    await settle()
    assert queue.waiting_for_slot == 1 and waits == [1000.0]
    await clock.advance(4.0)
    queue.notify()  # a change, but still no free slot: it waits again, for what is left
    await settle()
    assert not task.done() and waits == [1000.0, 1004.0]
    assert waiting.left_s == pytest.approx(6.0)
    await clock.advance(5.9)
    assert not task.done()
    await clock.advance(0.1)
    with pytest.raises(NoCapacity, match=r"within 10\.0 s"):
        await task
    assert queue.waiting_for_slot == 0 and clock.pending() == 0


async def test_a_free_slot_ends_the_wait() -> None:
    clock = FakeClock()
    queue = SlotQueue(clock)
    free: list[B] = []
    how = SlotSourceForTests(
        pick=lambda: free[0] if free else None, all_down=lambda: False, queue_timeout_s=10.0
    )
    waiting = queue.waiting(10.0)
    task = asyncio.ensure_future(acquire(queue, how, waiting))
    await settle()
    await clock.advance(2.5)
    free.append(SLOW)
    queue.notify()
    assert await task is SLOW
    assert waiting.left_s == pytest.approx(7.5) and clock.pending() == 0


async def test_nothing_in_rotation_fails_at_once() -> None:
    clock = FakeClock()
    queue = SlotQueue(clock)
    how = SlotSourceForTests(pick=lambda: None, all_down=lambda: True, queue_timeout_s=600.0)
    with pytest.raises(NoCapacity, match="no backend is in rotation"):
        await acquire(queue, how, queue.waiting(600.0))
    assert clock.pending() == 0  # it never waited


def _holding(fast_free: list[bool], worth_s: float) -> SlotSourceForTests:
    def hold(chosen: B, token: object) -> tuple[B, float, float] | None:
        return None if chosen is FAST else (FAST, 1.0, worth_s)

    return SlotSourceForTests(
        pick=lambda: FAST if fast_free else SLOW,
        all_down=lambda: False,
        queue_timeout_s=10.0,
        hold=hold,
    )


async def test_holding_back_takes_the_faster_one_when_it_frees_without_spending_the_timeout() -> (
    None
):
    clock = FakeClock()
    queue = SlotQueue(clock)
    fast_free: list[bool] = []
    waiting = queue.waiting(10.0)
    task = asyncio.ensure_future(acquire(queue, _holding(fast_free, worth_s=3.0), waiting))
    await settle()
    assert not task.done() and list(queue.holds) == ["fast"]
    assert queue.waiting_for_slot == 0  # holding back is not waiting for a slot
    await clock.advance(1.0)
    fast_free.append(True)
    queue.notify()
    assert await task is FAST
    assert waiting.held_s == pytest.approx(1.0) and waiting.left_s == 10.0
    assert queue.holds == {}


async def test_holding_back_ends_once_it_no_longer_pays() -> None:
    clock = FakeClock()
    queue = SlotQueue(clock)
    waiting = queue.waiting(10.0)
    task = asyncio.ensure_future(acquire(queue, _holding([], worth_s=3.0), waiting))
    await settle()
    queue.notify()  # a change that frees nothing fast: it holds on
    await settle()
    assert not task.done()
    await clock.advance(3.0)
    assert await task is SLOW
    assert waiting.held_s == pytest.approx(3.0) and waiting.left_s == 10.0
    assert queue.holds == {}


async def test_jobs_holding_back_for_one_backend_queue_in_order() -> None:
    clock = FakeClock()
    queue = SlotQueue(clock)
    seen: dict[str, dict[str, int]] = {}

    def how(name: str) -> SlotSourceForTests:
        def hold(chosen: B, token: object) -> tuple[B, float, float] | None:
            seen[name] = queue.ahead(token)
            return (FAST, 1.0, 5.0)

        return SlotSourceForTests(
            pick=lambda: SLOW, all_down=lambda: False, queue_timeout_s=10, hold=hold
        )

    first = asyncio.ensure_future(acquire(queue, how("first"), queue.waiting(10)))
    await settle()
    second = asyncio.ensure_future(acquire(queue, how("second"), queue.waiting(10)))
    await settle()
    assert len(queue.holds["fast"]) == 2
    queue.notify()
    await settle()
    assert seen == {"first": {"fast": 0}, "second": {"fast": 1}}
    first.cancel()
    await settle()
    queue.notify()
    await settle()
    assert seen["second"] == {"fast": 0}  # the first left: the second is next
    second.cancel()
    await asyncio.gather(first, second, return_exceptions=True)
    assert queue.holds == {}
