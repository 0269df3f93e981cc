"""Waiting for a free slot: who waits, who is woken first, how long one may wait, when
waiting is pointless, and holding back for a faster backend (no sockets; the clock is
injected, so all of it runs in tests without real time).

- Jobs that find no backend with a free slot wait for a change (a job ends, a report
  comes, a backend's health changes). A change wakes every waiting job, the share of
  the farm that used least of it recently first and, within a share, the longest
  waiting first (balancer/routing/fair.py): they look again, and pick, in that order;
  a job that a full backend turned away keeps its place, since it keeps the time it
  first began to wait. A job that finds a free slot leaves it to a waiting job of a
  share of lower rank (it waits on instead), for :data:`YIELD_MAX_S` at most: that job
  takes the slot at once when it can; one that cannot (a backend that refused it, or
  another worker's job that went away) must not keep the slot idle.
- A job waits at most the queue timeout in all, over all its waits (``Waiting``); then
  :class:`NoCapacity`, and the client compiles locally.
- Fail fast: when no backend is in rotation and each failed its latest check, there is
  nothing to wait for, and the job gives up at once rather than after the timeout.
- A big job may hold back for a faster backend to come free instead of taking a slower
  free one (balancer/routing/estimates.py says when that pays); holding does not spend the queue
  timeout, and stops once it no longer pays. Jobs holding back for the same backend
  queue in the order they began to, so the first to hold is the first it frees for.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from balancer.errors import NoCapacity

T = TypeVar("T")

YIELD_MAX_S = 0.25
"""How long a job leaves a free slot to a lighter share's waiting job before it takes
it itself."""


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def time(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer: ...


class LoopClock:
    """Real time: ``time.monotonic`` and the running loop's timers."""

    def time(self) -> float:
        return time.monotonic()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(delay, callback)


@dataclass
class Waiting:
    """One job's waiting for a backend, over all its attempts."""

    left_s: float
    """What is left of the queue timeout."""
    held_s: float = 0.0
    """Time spent holding back for a faster backend (not taken from ``left_s``)."""
    since: float = field(default_factory=time.monotonic)
    """When the job first asked: the longest waiting are woken first."""


class SlotQueue:
    """The jobs waiting for a change, and the jobs holding back for a backend."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or LoopClock()
        self._waiters: dict[int, tuple[float, object, asyncio.Future[None]]] = {}
        self._order = itertools.count()
        self.waiting_for_slot = 0
        """Jobs waiting because no backend has a free slot (not those holding back)."""
        self.holds: dict[str, list[object]] = {}
        """Per backend, the jobs holding back for it, in the order they began to."""
        self.ranks: Callable[[], Callable[[object], float]] = lambda: _no_rank
        """For one round of waking: a waiter's rank from its share (lowest first;
        balancer/routing/fair.py :meth:`FairShare.order`)."""

    def waiting(self, queue_timeout_s: float) -> Waiting:
        return Waiting(queue_timeout_s, since=self.clock.time())

    def notify(self) -> None:
        """Wake every waiting job: the lowest rank first, then those waiting longest
        (ties: who asked first)."""
        if not self._waiters:
            return
        waiters, self._waiters = self._waiters, {}
        rank = self.ranks()
        woken = sorted(waiters.items(), key=lambda item: (rank(item[1][1]), item[1][0], item[0]))
        for _, (_, _, future) in woken:
            if not future.done():
                future.set_result(None)

    async def wait(self, timeout_s: float, since: float | None = None, who: object = None) -> None:
        """Until the next :meth:`notify` or ``timeout_s``; ``since``: when the caller
        began to wait (default now), and ``who``: its share, its place in the wake order."""
        order = next(self._order)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[order] = (self.clock.time() if since is None else since, who, future)

        def expire() -> None:
            if not future.done():
                future.set_result(None)

        timer = self.clock.call_later(max(0.0, timeout_s), expire)
        try:
            await future
        finally:
            timer.cancel()
            self._waiters.pop(order, None)
            if not future.done():
                future.cancel()

    def ahead(self, token: object) -> dict[str, int]:
        """Per backend, how many jobs hold back for it ahead of ``token``'s job."""
        return {
            name: queue.index(token) if token in queue else len(queue)
            for name, queue in self.holds.items()
        }

    def _hold(self, backend: str, token: object) -> None:
        self.holds.setdefault(backend, []).append(token)

    def _leave(self, backend: str | None, token: object) -> None:
        if backend is not None:
            queue = self.holds[backend]
            queue.remove(token)
            if not queue:
                del self.holds[backend]


def _no_rank(_: object) -> float:
    return 0.0


class Named(Protocol):
    @property
    def name(self) -> str: ...


B = TypeVar("B", bound=Named)


class SlotSource(Protocol[B]):
    """How one job takes a slot (:func:`acquire`): its picks, whether to hold back, when
    to give up (balancer/dispatch/acquire.py makes one per job; tests, their own)."""

    @property
    def queue_timeout_s(self) -> float:
        """The job's whole wait for a slot (for the message when it runs out)."""
        ...

    def pick(self) -> B | None:
        """A backend with a free slot now, or None."""

    def nothing_to_wait_for(self) -> bool:
        """No backend could ever take it: nothing is in rotation and every backend
        failed its latest check (or it may raise: no backend runs its compiler)."""

    def hold(self, chosen: B, token: object) -> tuple[B, float, float] | None:
        """For a backend about to be taken: (faster backend to hold back for, expected
        wait, how long holding still pays), or None. ``token``: the job's hold token."""

    def waiting(self) -> None:
        """The job begins to wait for a slot (e.g. to poll faster)."""

    def holding(self, target: B, instead_of: B) -> None:
        """The job first holds back: for ``target``, instead of ``instead_of``."""

    def reserve(self, backend: B) -> bool:
        """Take the slot of the backend picked, in the same step as the pick; False: it
        was taken meanwhile (by another worker), so wait for the next change."""

    @property
    def who(self) -> object:
        """The job's share (its place in the wake order; None: no share)."""
        ...

    def yields(self) -> bool:
        """Whether the job must leave a free slot to a waiting job of a share of lower
        rank (balancer/routing/fair.py)."""

    def wait_begins(self) -> None:
        """The job waits for a slot (others may yield to it) until :meth:`wait_ends`."""

    def wait_ends(self) -> None: ...


def take_now(how: SlotSource[B], token: object | None = None) -> B | None:
    """A backend with a free slot, taken now, when one is free and the job would not
    hold back for a faster one; else None (then :func:`acquire` waits for one). The
    first step of :func:`acquire`, without a task or a wait: most jobs find a free
    slot at once."""
    backend = how.pick()
    if backend is None or how.yields():
        return None
    if how.hold(backend, token if token is not None else object()):
        return None
    if how.reserve(backend):
        return backend
    return None


async def acquire(queue: SlotQueue, how: SlotSource[B], waiting: Waiting) -> B:
    """A backend with a free slot, waiting at most ``waiting.left_s`` in all (and
    holding back while it pays). Raises :class:`NoCapacity`."""
    clock = queue.clock
    give_up_holding_at: float | None = None
    held: str | None = None  # the backend whose queue we hold back in
    token = object()
    registered = False  # counted as waiting (lighter shares' jobs yield to it)
    yielding_since: float | None = None  # left a free slot to a lighter share's job since
    try:
        while True:
            backend = how.pick()
            yield_left_s = 0.0
            if backend is None:
                yielding_since = None
            elif how.yields():
                now = clock.time()
                yielding_since = now if yielding_since is None else yielding_since
                yield_left_s = YIELD_MAX_S - (now - yielding_since)
                if yield_left_s > 0:
                    backend = None  # (a lighter share's job waits for it: wait on)
            if backend is not None:
                now = clock.time()
                faster = None
                if give_up_holding_at is None or now < give_up_holding_at:
                    faster = how.hold(backend, token)
                if faster is None:
                    if how.reserve(backend):
                        if registered:
                            how.wait_ends()
                            registered = False
                        return backend
                else:
                    if registered:  # (holding back, it leaves slots to others)
                        how.wait_ends()
                        registered = False
                        queue.notify()
                    target, _wait_s, worth_s = faster
                    if give_up_holding_at is None:
                        give_up_holding_at = now + worth_s
                        how.holding(target, backend)
                    if held != target.name:  # a first hold, or for another backend now
                        queue._leave(held, token)
                        queue._hold(target.name, token)
                        held = target.name
                    # Woken by any change (our job there ending is one); waiting longer than
                    # expected is fine until it stops being worth it.
                    await queue.wait(give_up_holding_at - now, waiting.since, how.who)
                    waiting.held_s += clock.time() - now
                    continue
            if waiting.left_s <= 0:
                raise NoCapacity(f"no backend had a free slot within {how.queue_timeout_s} s")
            if how.nothing_to_wait_for():
                # Nothing to wait for: the client compiles locally now, not in 10 s.
                raise NoCapacity("no backend is in rotation")
            started = clock.time()
            how.waiting()
            if not registered:
                how.wait_begins()
                registered = True
            queue.waiting_for_slot += 1
            try:
                wait_s = min(waiting.left_s, yield_left_s) if yield_left_s > 0 else waiting.left_s
                await queue.wait(wait_s, waiting.since, how.who)
            finally:
                queue.waiting_for_slot -= 1
            waiting.left_s -= clock.time() - started
    finally:
        queue._leave(held, token)
        if registered:
            how.wait_ends()
            # It gives up (timeout, cancelled): jobs that left a slot to it may take it.
            queue.notify()
