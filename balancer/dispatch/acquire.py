"""Taking a slot for a job: the pick (balancer/routing/roster.py), the wait for one when none
is free and the hold-back of a big job for a faster backend (balancer/routing/queue.py,
balancer/routing/estimates.py), the slot reserved in the same step as the pick."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import structlog

from balancer.dispatch.attempts import JobAttempts
from balancer.errors import NoCompiler
from balancer.pool.pool import Pool
from balancer.routing.backend import Backend
from balancer.routing.estimates import Running, wait_choice
from balancer.routing.queue import Acquire, Waiting, acquire
from balancer.settings import DispatchSettings

log = structlog.get_logger("distlb.balancer.dispatch")

HOLD_WANTS_CHANGES_S = 30.0
"""A job that holds back for a faster backend hears of the other workers' freed slots
this long (holding back pays for a few seconds at most: balancer/routing/estimates.py)."""


class SlotTaker:
    def __init__(
        self, pool: Pool, settings: DispatchSettings, running: set[Running], rng: random.Random
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.running = running
        """The dispatcher's jobs running now (what a big job may hold back for)."""
        self.rng = rng
        self.waited_for_faster = 0

    def pick(
        self, exclude: set[str], affinity: bytes | None = None, big: bool = False
    ) -> Backend | None:
        return self.pool.roster.pick(self.rng, time.monotonic(), exclude, affinity, big=big)

    def barred(self, job: JobAttempts) -> set[str]:
        """Backends ``job`` must never go to: without its compiler or outside the
        identity chosen for it (kept per compiler name), and those that refused it."""
        route = self.pool.routing.route(self.pool.backends.values(), job.request.argv[0])
        return set(route.exclude) | job.refused

    def nowhere(self, job: JobAttempts) -> bool:
        """Raises :class:`NoCompiler` when no backend runs the job's compiler, in rotation
        or not yet checked (the client then compiles locally, at once); else False."""
        route = self.pool.routing.route(self.pool.backends.values(), job.request.argv[0])
        if route.offered or route.pending or self.pool.healthy_count() == 0:
            return False  # (a farm all down is "no backend in rotation", not this)
        raise NoCompiler(job.request.argv[0])

    def how(
        self,
        exclude: set[str],
        affinity: bytes | None,
        big: bool,
        factor: float = 1.0,
        barred: Callable[[], set[str]] | None = None,
        nowhere: Callable[[], bool] | None = None,
    ) -> Acquire[Backend]:
        """How a job takes a slot (balancer/routing/queue.py): its picks (``barred``: the
        backends it must never go to, read again at every pick, since where its
        compiler is may change while it waits), holding back for a faster backend (a big
        job, within what it gains: :func:`balancer.routing.estimates.wait_choice`), and ``nowhere``:
        whether no backend is left that could ever take it (it raises, or says so)."""

        def never() -> set[str]:
            return barred() if barred is not None else set()

        def pick() -> Backend | None:
            kept_out = never()
            backend = self.pick(set(exclude) | kept_out, affinity, big)
            if backend is None and exclude:
                # Everything else is full or down: a backend that failed this job
                # once may still be the only one that can take it (never one that
                # lacks its compiler).
                backend = self.pick(kept_out, affinity, big)
            return backend

        def hold(chosen: Backend, token: object) -> tuple[Backend, float, float] | None:
            return self.faster_soon(chosen, big, factor, set(exclude) | never(), token)

        def nothing_to_wait_for() -> bool:
            return (nowhere is not None and nowhere()) or self.pool.all_down()

        def on_hold(target: Backend, instead_of: Backend) -> None:
            self.pool.want_changes(HOLD_WANTS_CHANGES_S)
            self.waited_for_faster += 1
            log.debug("waiting_for_faster", backend=target.name, instead_of=instead_of.name)

        return Acquire(
            pick=pick,
            all_down=nothing_to_wait_for,
            queue_timeout_s=self.settings.queue_timeout_s,
            hold=hold,
            on_wait=self.pool.demand,
            on_hold=on_hold,
            # The slot is taken in the same step as the pick: the job launches on it
            # only once its loop runs again, and jobs woken meanwhile must see it taken.
            reserve=Backend.reserve,
        )

    async def acquire(
        self,
        exclude: set[str],
        waiting: Waiting,
        affinity: bytes | None,
        big: bool,
        factor: float = 1.0,
        barred: Callable[[], set[str]] | None = None,
        nowhere: Callable[[], bool] | None = None,
    ) -> Backend:
        """A backend with a free slot, waiting for one at most ``waiting.left_s`` in all
        (balancer/routing/queue.py); see :meth:`how`. A hold does not spend the budget."""
        return await acquire(
            self.pool.queue, self.how(exclude, affinity, big, factor, barred, nowhere), waiting
        )

    def faster_soon(
        self, chosen: Backend, big: bool, factor: float, exclude: set[str], token: object
    ) -> tuple[Backend, float, float] | None:
        """For a big job about to start on ``chosen``: a faster backend worth holding
        back for (not one that failed this job), the expected wait and how long
        waiting stays worth it; else None. Jobs that began to hold back for a backend
        before this one are ahead of it in that backend's queue."""
        if not big or self.settings.wait_for_faster <= 0 or chosen.caches_results:
            return None  # (a backend that caches results may be the job's affinity choice)
        ahead = self.pool.queue.ahead(token)
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
