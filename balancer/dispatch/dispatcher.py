"""Store and forward: send a buffered job to a backend, retry, wait for capacity, hedge.

Nothing has reached the client while we try, so a job that a backend turned
away, refused, reset or dropped mid-reply is simply sent elsewhere (at most
``max_attempts`` times). When no backend has a free slot we wait up to
``queue_timeout`` in all, then give up so that the client compiles locally. A
reply that is late far beyond that backend's usual latency is hedged: the same
job goes to a second backend and the first complete reply wins; the loser's
connection is closed, which makes a distlb server kill that compile.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Callable

import structlog

from balancer.dispatch.acquire import SlotTaker
from balancer.dispatch.attempts import (
    Attempt,
    BackendConn,
    Dispatched,
    JobAttempts,
    Step,
    attempt_deadline,
)
from balancer.dispatch.caching import CacheFront
from balancer.dispatch.hedge import TailWatcher, hedge_delay, next_hedge
from balancer.dispatch.pump import PumpRoute
from balancer.dispatch.sender import Sender
from balancer.errors import AllFailed, NoCapacity, NotDispatched
from balancer.pool.pool import Pool
from balancer.routing.backend import Backend
from balancer.routing.estimates import Running, SizeHints
from balancer.routing.fair import FairShare, Share
from balancer.routing.groups import Who
from balancer.routing.queue import SlotQueue, Waiting, take_now
from balancer.settings import DispatchSettings
from cache import ResultCache, digest_off_loop, why_not_cacheable
from wire import Limits, Reply, Request
from wire.stream import encode_request_off_loop

log = structlog.get_logger("distlb.balancer.dispatch")


class Dispatcher:
    def __init__(
        self,
        pool: Pool,
        settings: DispatchSettings,
        limits: Limits,
        rng: random.Random | None = None,
        cache: ResultCache | None = None,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.limits = limits
        self.sender = Sender(pool, settings, limits)
        self.rng = rng or random.Random()  # noqa: S311 (load spreading, not secrets)
        self.retries = 0
        self.hedges = 0
        self.hedge_wins = 0
        self.tail_hedges = 0
        self.rescues = 0
        self.deadlines = 0
        self.cache = cache
        self.caching = CacheFront(cache, pool, settings.cache_trust_unsandboxed) if cache else None
        self._sizes = SizeHints()
        self._running: set[Running] = set()
        self.queue = SlotQueue()
        """The jobs waiting for a slot or holding back for a faster backend; woken by
        every change of the pool (balancer/routing/queue.py)."""
        pool.add_listener(self.queue.notify)
        shares = pool.shared.shares if pool.shared is not None else None  # (--workers)
        self.fair = FairShare(shares, settings.fair_memory_s, settings.fair_share)
        self.queue.ranks = self.fair.order
        self.slots = SlotTaker(pool, self.queue, settings, self._running, self.rng, self.fair)
        self._jobs: set[JobAttempts] = set()
        self.tail = TailWatcher(
            pool.roster,
            self._running,
            settings.tail_hedge,
            self._anyone_waits,  # while jobs wait, no slot is spare
            self._wake_backed_up,
        )
        pool.add_listener(self.tail.changed)
        pool.add_down_listener(self._on_backend_down)

    def apply(self, settings: DispatchSettings, cache: ResultCache | None) -> None:
        """A reload's settings and result cache, for the jobs that start from now on
        (those running keep the objects they hold)."""
        self.settings = self.sender.settings = self.slots.settings = settings
        self.tail.speedup = settings.tail_hedge
        self.fair.enabled, self.fair.memory_s = settings.fair_share, settings.fair_memory_s
        self.queue.notify()  # (jobs that left a slot to another may take it now)
        if cache is not self.cache:
            self.cache = cache
            self.caching = CacheFront(cache, self.pool, False) if cache is not None else None
        if self.caching is not None:
            self.caching.trust_unsandboxed = settings.cache_trust_unsandboxed

    def size_hints(self, source_bytes: int) -> tuple[bool, float]:
        """:meth:`balancer.routing.estimates.SizeHints.hints`, over this dispatcher's
        recent jobs."""
        return self._sizes.hints(source_bytes)

    @property
    def fair_yields(self) -> int:
        """Free slots a job left to a waiting job of a lighter share (balancer/routing/fair.py)."""
        return self.fair.yielded

    @property
    def waited_for_faster(self) -> int:
        """Big jobs that held back for a faster backend (balancer/dispatch/acquire.py)."""
        return self.slots.waited_for_faster

    def _anyone_waits(self) -> bool:
        """Jobs wait for a slot (here, or in another worker): no slot is spare."""
        return bool(self.queue.waiting_for_slot) or self.fair.anyone_waits()

    def _on_backend_down(self, backend: Backend) -> None:
        """Wake the jobs running on a backend that left rotation (they rescue)."""
        self._wake(lambda attempt: attempt.backend is backend)

    def _wake_backed_up(self, running: Running) -> None:
        """The tail watcher chose ``running`` for a backup: wake its job."""
        self._wake(lambda attempt: attempt.running is running)

    def _wake(self, which: Callable[[Attempt], bool]) -> None:
        for job in self._jobs:
            if any(which(a) for a in job.running):
                job.wake.set()

    async def dispatch(
        self,
        request: Request,
        held: Callable[[int], None] | None = None,
        watch: Callable[[JobAttempts], None] | None = None,
        pump: PumpRoute | None = None,
        who: Who | None = None,
    ) -> Dispatched:
        """Get ``request`` compiled (or from the cache). Its bytes are made once for all
        its attempts, ``held`` told their size (a budget counts them); ``watch`` given
        the job's attempt record (the dashboard shows it); ``pump``: a pump job's bytes,
        where it may go and its cache key; ``who``: its client's share of the farm
        (balancer/routing/fair.py). Raises :class:`balancer.errors.NotDispatched`."""
        share = self.fair.share(who) if who is not None else None
        if pump is not None:
            compiled = functools.partial(self._compile, request, None, held, watch, pump, share)
            caching = self.caching if pump.key is not None else None
            return await (caching.pump_job(pump, request, compiled) if caching else compiled())
        # The job's digest keys the cache and is its affinity to a caching backend:
        # without either, hashing every source is work for nothing.
        wanted = self.caching is not None or self.pool.roster.any_caching
        job = None
        if wanted and why_not_cacheable(request.argv) is None:
            job = await digest_off_loop(request, self.settings.cache_share_across_dirs)
        caching = self.caching if job is not None and job.uncacheable is None else None
        if caching is not None and job is not None:
            hit = await caching.lookup(job, request)
            if hit is not None:
                return hit
        affinity = job.route if job is not None else None
        when_sent = caching.identities_now(request.argv[0]) if caching is not None else {}
        outcome = await self._compile(request, affinity, held, watch, share=share)
        if caching is not None and job is not None:
            caching.store(job, request, outcome, when_sent)  # (only from trusted sources)
        return outcome

    async def _compile(
        self,
        request: Request,
        affinity: bytes | None,
        held: Callable[[int], None] | None,
        watch: Callable[[JobAttempts], None] | None,
        pump: PumpRoute | None = None,
        share: Share | None = None,
    ) -> Dispatched:
        """The attempt loop: one attempt at first; a retry when one fails (within
        ``max_attempts`` failures); a hedge when the reply is late or a much faster
        backend comes free; a rescue at once when every running attempt is on a
        backend that has left rotation; and a deadline on every attempt. The first good
        reply wins and the others are closed."""
        waiting = self.queue.waiting(self.settings.queue_timeout_s)
        encoded = pump.encoded if pump is not None else await encode_request_off_loop(request)
        big, factor = self.size_hints(len(request.source) if pump is None else len(encoded))
        if held is not None:
            held(len(encoded))
        allow = pump.allows if pump else None
        job = JobAttempts(request, big, factor, affinity, encoded, allow=allow, share=share)
        if watch is not None:
            watch(job)
        self.slots.nowhere(job.compiler)  # (raises at once when no backend runs its compiler)
        if not self.queue.waiting_for_slot:
            # Most jobs find a free slot at once: taken here, with no task to acquire
            # one (none is taken ahead of jobs that wait).
            how = self.slots.how(
                set(), affinity, big, factor, job.compiler, job.refused, job.allow, share
            )
            backend = take_now(how)
            if backend is not None:
                self._launch(job, backend, "first", reserved=True)
        # Attempts that a backend failed or that were hedges are bounded by count; a
        # busy backend's turn-away is not a failure but a wait, bounded by the queue
        # timeout, and by a generous count for safety.
        max_sends = (
            self.settings.max_attempts + self.settings.max_hedges + max(2, len(self.pool.backends))
        )
        acquiring: asyncio.Task[Backend] | None = None
        self._jobs.add(job)
        try:
            while True:
                reply = self._harvest(job)
                if reply is not None:
                    return self._won(job, reply, waiting)
                looked = time.monotonic()  # (one clock for this turn's every decision)
                self._enforce_deadlines(job, looked)
                if acquiring is not None and acquiring.done():
                    try:
                        backend = acquiring.result()
                    except NoCapacity:
                        if not job.running:
                            raise
                        # Nowhere to send a copy now (a rescue found no backend): wait for
                        # a change or what runs, not round at once (review 26: a spin).
                        acquiring = None
                        pool_changed = self.queue.wait(1.0)
                        await job.wait_for_next(
                            None, pool_changed, self.settings.max_hedges, looked
                        )
                        continue
                    self._launch(job, backend, "retry" if job.history else "first", reserved=True)
                    acquiring = None
                    continue
                step = job.next_step(self.settings, max_sends)
                if step is Step.GIVE_UP_FAILED:
                    raise AllFailed(job.last_error)
                if not job.running:
                    self.slots.nowhere(job.compiler)
                if step is Step.GIVE_UP_SENDS:
                    raise AllFailed(f"{len(job.history)} attempts: {job.last_error}")
                wants_change = False
                if acquiring is None:
                    acquiring, wants_change = self._next_move(job, step, waiting, looked)
                change = self.queue.wait(1.0) if wants_change else None
                await job.wait_for_next(acquiring, change, self.settings.max_hedges, looked)
        except NotDispatched as exc:
            exc.history = job.describe()
            raise
        finally:
            self._jobs.discard(job)
            if share is not None:
                self.fair.waited(share, self.settings.queue_timeout_s - waiting.left_s)
            if acquiring is not None:
                # A slot it reserved but never launched on is given back, now or when the
                # acquiring ends (before any await here: a second cancel must not skip it).
                acquiring.add_done_callback(self.sender.release_reserved)
                acquiring.cancel()
            for attempt in job.running:
                attempt.task.cancel()
            # The losers' errors, their cancellation included, come back as values; our
            # own cancellation (the client left) propagates.
            if job.running:
                await asyncio.gather(*(a.task for a in job.running), return_exceptions=True)
            if acquiring is not None:
                await asyncio.gather(acquiring, return_exceptions=True)
            for attempt in job.running:
                job.end(attempt, "closed")
            self._running.difference_update(a.running for a in job.history)
            if self.queue.holds:
                # Jobs holding back may have counted on this one's end: let them
                # look again now that it is not running any more.
                self.pool.notify()

    def _next_move(
        self, job: JobAttempts, step: Step, waiting: Waiting, now: float
    ) -> tuple[asyncio.Task[Backend] | None, bool]:
        """Start what ``step`` (:meth:`JobAttempts.next_step`) says; returns a task
        acquiring a backend (when it must wait for one) and whether it waits for the
        pool to change (a hedge that found no free backend yet)."""
        if step is Step.ACQUIRE:
            return asyncio.create_task(self.slots.acquire(
                job.failed, waiting, job.affinity, job.big, job.factor, job.compiler,
                job.refused, job.allow, job.share,
            )), False  # fmt: skip
        if step not in (Step.RESCUE, Step.HEDGE):
            return None, False
        running = {a.backend.name for a in job.running}
        exclude = job.failed | self.slots.barred(job.compiler, job.refused, job.allow) | running
        if step is Step.RESCUE:
            backend = self.slots.pick(exclude, big=True)
            if backend is not None:
                return None, not self._launch(job, backend, "rescue")
            return asyncio.create_task(self.slots.acquire(
                job.failed | running, waiting, None, True, job.factor, job.compiler,
                job.refused, job.allow, job.share,
            )), False  # fmt: skip
        kind, backend = next_hedge(
            job.running,
            self.pool.backends,
            exclude,
            lambda: self.slots.pick(exclude, big=True),  # the fastest free one
            now,
        )
        if kind == "late" and self._anyone_waits():
            return None, True  # (a late job's copy takes no slot a waiting job would get)
        if backend is not None:
            # (another worker may have taken its slot meanwhile: wait for a change)
            return None, not self._launch(job, backend, kind)
        return None, kind == "late"  # late, but nothing free: wait for a change

    def _launch(
        self, job: JobAttempts, backend: Backend, kind: str, reserved: bool = False
    ) -> bool:
        """Send one attempt of ``job`` to ``backend``; False when its slot was taken
        meanwhile (by another worker)."""
        if not reserved and not backend.reserve():
            # Another worker took its last slot since the pick: the job's loop picks
            # again at its next turn (the pick index knows now).
            log.debug("slot_taken_meanwhile", backend=backend.name, attempt=kind)
            return False
        now = time.monotonic()
        if kind != "first":
            if kind in ("retry", "rescue"):
                self.retries += 1
            if kind in ("late", "tail"):
                job.hedges += 1
                self.hedges += 1
                if kind == "tail":
                    self.tail_hedges += 1
            if kind == "rescue":
                self.rescues += 1
            if kind in ("late", "tail", "rescue"):
                log.info("job_hedged", reason=kind, hedge_backend=backend.name,
                         running_on=[a.backend.name for a in job.running])  # fmt: skip
        running = Running(backend.name, now, job.factor)
        conn = BackendConn()
        task = self.sender.start(backend, job.request, conn.made, job.encoded)
        if job.share is not None:
            # Its share is charged the slot's time, however the attempt ends.
            share, began = job.share, self.fair.started(job.share)
            task.add_done_callback(lambda _: self.fair.ended(share, began))
        attempt = Attempt(
            backend=backend,
            task=task,
            conn=conn,
            running=running,
            kind=kind,
            started=now,
            late_at=now
            + hedge_delay(backend, self.settings.hedge_after_s, self.settings.hedge_min_s),
            deadline=now + attempt_deadline(self.settings, backend, job.factor),
        )
        job.running.append(attempt)
        job.history.append(attempt)
        self._running.add(running)
        return True

    def _harvest(self, job: JobAttempts) -> Reply | None:
        """Take in the attempts that ended (:meth:`JobAttempts.record`): a reply wins;
        a failure or a turn-away is written down (the loop then decides what to start
        instead)."""
        for attempt in [a for a in job.running if a.task.done()]:
            job.running.remove(attempt)
            self._running.discard(attempt.running)
            reply = job.record(attempt)
            if reply is not None:
                return reply
        return None

    def _enforce_deadlines(self, job: JobAttempts, now: float) -> None:
        for attempt in [a for a in job.running if now >= a.deadline]:
            attempt.task.cancel()
            job.running.remove(attempt)
            self._running.discard(attempt.running)
            self.deadlines += 1
            charged = job.missed_deadline(attempt, self.settings)
            if charged is not None:
                self.pool.mark_failure(attempt.backend, charged)
            log.warning("attempt_deadline", backend=attempt.backend.name,
                        backend_charged=charged is not None, reason=job.last_error)  # fmt: skip

    def _won(self, job: JobAttempts, reply: Reply, waiting: Waiting) -> Dispatched:
        assert job.winner is not None
        if job.winner.kind in ("late", "tail", "rescue"):
            self.hedge_wins += 1
        if reply.status == 0 and reply.obj:
            job.winner.backend.ok += 1
        return job.answer(reply, self.settings.queue_timeout_s - waiting.left_s + waiting.held_s)
