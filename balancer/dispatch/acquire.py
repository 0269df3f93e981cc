"""Taking a slot for a job: the pick (balancer/routing/roster.py), the wait for one when none
is free and the hold-back of a big job for a faster backend (balancer/routing/queue.py,
balancer/routing/estimates.py), the slot reserved in the same step as the pick."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import structlog

from balancer.errors import NoCompiler
from balancer.pool.pool import Pool
from balancer.routing.backend import Backend
from balancer.routing.estimates import Running, wait_choice
from balancer.routing.fair import FairShare, Share
from balancer.routing.queue import SlotQueue, Waiting, acquire
from balancer.settings import DispatchSettings

Allow = Callable[[Backend], bool]
"""Whether a job may go to a backend, asked at every pick (a pump job's: whether the
backend serves pump for it, by its report now)."""

log = structlog.get_logger("distlb.balancer.dispatch")

HOLD_WANTS_CHANGES_S = 30.0
"""A job that holds back for a faster backend hears of the other workers' freed slots
this long (holding back pays for a few seconds at most: balancer/routing/estimates.py)."""


class SlotTaker:
    def __init__(
        self,
        pool: Pool,
        queue: SlotQueue,
        settings: DispatchSettings,
        running: set[Running],
        rng: random.Random,
        fair: FairShare | None = None,
    ) -> None:
        self.pool = pool
        self.fair = fair or FairShare()
        """Who gets a freed slot while jobs wait (balancer/routing/fair.py)."""
        self.queue = queue
        self.settings = settings
        self.running = running
        """The dispatcher's jobs running now (what a big job may hold back for)."""
        self.rng = rng
        self.waited_for_faster = 0

    def pick(
        self, exclude: set[str], affinity: bytes | None = None, big: bool = False
    ) -> Backend | None:
        return self.pool.roster.pick(self.rng, time.monotonic(), exclude, affinity, big=big)

    def barred(self, compiler: str, refused: set[str], allow: Allow | None = None) -> set[str]:
        """Backends a job for ``compiler`` must never go to: without its compiler or
        outside the identity chosen for it (kept per compiler name), those that
        ``refused`` it, and those ``allow`` (asked at every pick: a reload may add a
        backend, or change one) says no to."""
        route = self.pool.routing.route(self.pool.backends.values(), compiler)
        barred = set(route.exclude) | refused
        if allow is not None:
            barred |= {name for name, b in self.pool.backends.items() if not allow(b)}
        return barred

    def nowhere(self, compiler: str) -> bool:
        """Raises :class:`NoCompiler` when no backend runs ``compiler``, in rotation or
        not yet checked (the client then compiles locally, at once); else False."""
        route = self.pool.routing.route(self.pool.backends.values(), compiler)
        if route.offered or route.pending or self.pool.healthy_count() == 0:
            return False  # (a farm all down is "no backend in rotation", not this)
        raise NoCompiler(compiler)

    def how(
        self,
        exclude: set[str],
        affinity: bytes | None,
        big: bool,
        factor: float = 1.0,
        compiler: str | None = None,
        refused: set[str] | None = None,
        allow: Allow | None = None,
        share: Share | None = None,
    ) -> JobSlots:
        """How a job takes a slot (balancer/routing/queue.py): see :class:`JobSlots`.
        Without ``compiler``, no backend is barred and there is always one to wait for
        (but when all are down); without ``share``, it never yields a slot."""
        return JobSlots(self, exclude, affinity, big, factor, compiler, refused, allow, share)

    async def acquire(
        self,
        exclude: set[str],
        waiting: Waiting,
        affinity: bytes | None,
        big: bool,
        factor: float = 1.0,
        compiler: str | None = None,
        refused: set[str] | None = None,
        allow: Allow | None = None,
        share: Share | None = None,
    ) -> Backend:
        """A backend with a free slot, waiting for one at most ``waiting.left_s`` in all
        (balancer/routing/queue.py); see :meth:`how`. A hold does not spend the budget."""
        how = self.how(exclude, affinity, big, factor, compiler, refused, allow, share)
        return await acquire(self.queue, how, waiting)

    def faster_soon(
        self, chosen: Backend, big: bool, factor: float, exclude: set[str], token: object
    ) -> tuple[Backend, float, float] | None:
        """For a big job about to start on ``chosen``: a faster backend worth holding
        back for (not one that failed this job), the expected wait and how long
        waiting stays worth it; else None. Jobs that began to hold back for a backend
        before this one are ahead of it in that backend's queue."""
        if not big or self.settings.wait_for_faster <= 0 or chosen.caches_results:
            return None  # (a backend that caches results may be the job's affinity choice)
        ahead = self.queue.ahead(token)
        # Only a backend that runs one of our jobs can be waited for.
        backends = self.pool.backends
        ours = {r.backend for r in self.running} - exclude
        candidates = [backends[name] for name in ours if name in backends]
        return wait_choice(
            chosen,
            candidates,
            self.running,
            ahead,
            time.monotonic(),
            factor,
            self.settings.wait_for_faster,
            self.pool.roster.costs,
        )


class JobSlots:
    """One job's way to a slot (a :class:`balancer.routing.queue.SlotSource`): its picks
    (never a backend it is barred from, read again at every pick: where its compiler is
    may change while it waits, and ``refused`` grows when a backend says it lacks it),
    holding back for a faster backend (a big job, within what it gains:
    :func:`balancer.routing.estimates.wait_choice`), whether no backend is left that
    could ever take it (it raises :class:`NoCompiler`, or says so), and its share's
    turn (balancer/routing/fair.py: jobs of one compiler, pump or not, are of one kind)."""

    def __init__(
        self,
        taker: SlotTaker,
        exclude: set[str],
        affinity: bytes | None,
        big: bool,
        factor: float,
        compiler: str | None,
        refused: set[str] | None,
        allow: Allow | None = None,
        share: Share | None = None,
    ) -> None:
        self.taker = taker
        self.share = share
        self.kind = f"{compiler or ''}{' pump' if allow is not None else ''}"
        self.allow = allow
        self.exclude = exclude
        self.affinity = affinity
        self.big = big
        self.factor = factor
        self.compiler = compiler
        self.refused = refused if refused is not None else set()

    @property
    def queue_timeout_s(self) -> float:
        return self.taker.settings.queue_timeout_s

    def _never(self) -> set[str]:
        if self.compiler is None:
            return set(self.refused)
        return self.taker.barred(self.compiler, self.refused, self.allow)

    def pick(self) -> Backend | None:
        kept_out = self._never()
        backend = self.taker.pick(set(self.exclude) | kept_out, self.affinity, self.big)
        if backend is None and self.exclude:
            # Everything else is full or down: a backend that failed this job once may
            # still be the only one that can take it (never one that lacks its compiler).
            backend = self.taker.pick(kept_out, self.affinity, self.big)
        return backend

    def nothing_to_wait_for(self) -> bool:
        if self.compiler is not None and self.taker.nowhere(self.compiler):
            return True
        return self.taker.pool.all_down()

    def hold(self, chosen: Backend, token: object) -> tuple[Backend, float, float] | None:
        exclude = set(self.exclude) | self._never()
        return self.taker.faster_soon(chosen, self.big, self.factor, exclude, token)

    def waiting(self) -> None:
        self.taker.pool.demand()

    def holding(self, target: Backend, instead_of: Backend) -> None:
        self.taker.pool.want_changes(HOLD_WANTS_CHANGES_S)
        self.taker.waited_for_faster += 1
        log.debug("waiting_for_faster", backend=target.name, instead_of=instead_of.name)

    def reserve(self, backend: Backend) -> bool:
        # The slot is taken in the same step as the pick: the job launches on it only
        # once its loop runs again, and jobs woken meanwhile must see it taken.
        return backend.reserve()

    @property
    def who(self) -> object:
        return self.share

    def yields(self) -> bool:
        return self.share is not None and self.taker.fair.yields(self.share, self.kind)

    def wait_begins(self) -> None:
        if self.share is not None:
            self.taker.fair.wait_begins(self.share, self.kind)

    def wait_ends(self) -> None:
        if self.share is not None:
            self.taker.fair.wait_ends(self.share, self.kind)
