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
import random
import statistics
import time
from collections import deque
from dataclasses import dataclass, field

import structlog

from balancer.backends import Backend
from balancer.picker import pick
from balancer.pool import Pool
from balancer.tail import Running, backup_choice, size_factor, wait_choice
from cache import CachedResult, ResultCache, cache_key, job_digest, why_not_cacheable
from client import ClientError, TurnedAway, compile_remote
from wire import Limits, Reply, Request

log = structlog.get_logger("distlb.balancer.dispatch")

SIZE_WINDOW = 256
"""Recent jobs whose source sizes say what counts as a big job."""
MIN_SIZES_FOR_BIG = 16


@dataclass(frozen=True)
class DispatchSettings:
    queue_timeout_s: float = 10.0
    max_attempts: int = 3
    hedge_after_s: float | None = None
    """Fixed hedge delay; None: the larger of ``hedge_min_s`` and 3 x the backend's p95."""
    hedge_min_s: float = 5.0
    tail_hedge: float = 2.0
    """Back up a running job on a free backend that would finish it this many times
    sooner, while no job waits for a slot (balancer/tail.py); 0 turns it off."""
    wait_for_faster: float = 1.25
    """A big job waits for a faster backend to come free instead of taking a slower
    free one, when it would finish this many times sooner (balancer/tail.py); 0: off."""
    connect_timeout_s: float = 1.0
    job_timeout_s: float = 1500.0
    """Longest wait for one backend's reply (beyond a server's 1200 s job lifetime)."""


@dataclass
class Waiting:
    """One job's waiting for a backend, over all its attempts."""

    left_s: float
    """What is left of the queue timeout."""
    held_s: float = 0.0
    """Time spent holding back for a faster backend (not taken from ``left_s``)."""
    since: float = field(default_factory=time.monotonic)
    """When the job first asked: the longest waiting are woken first."""


class NoCapacity(Exception):
    """No healthy backend had a free slot within the queue timeout."""


class AllFailed(Exception):
    """Every attempt failed; the last reason is the message."""


@dataclass
class Outcome:
    reply: Reply
    backend: str
    attempts: int
    hedged: bool
    tried: list[str] = field(default_factory=list)
    cached: bool = False
    queued_s: float = 0.0
    """Time spent waiting for a backend with a free slot."""


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
        self.rng = rng or random.Random()  # noqa: S311 (load spreading, not secrets)
        self.retries = 0
        self.hedges = 0
        self.hedge_wins = 0
        self.tail_hedges = 0
        self.cache = cache
        self._sizes: deque[int] = deque(maxlen=SIZE_WINDOW)
        self._running: set[Running] = set()
        self._waiting = 0
        """Jobs waiting for a free slot: while any do, a slot is not to spare."""
        self._holds: dict[str, list[object]] = {}
        """Per backend, the big jobs holding back for it to come free, in the order
        they began to (balancer/tail.py)."""
        self.waited_for_faster = 0
        pool.add_listener(self._on_pool_change)

    def size_hints(self, source_bytes: int) -> tuple[bool, float]:
        """Whether a job is big (larger than the median of recent jobs, once enough are
        known) and its size over that median (clamped); remembers its size.

        The preprocessed size is the one hint of a job's cost that we have before it
        runs: big jobs go to the fastest free backend (:func:`balancer.picker.pick`), and
        the factor scales its expected time for tail hedging (:mod:`balancer.tail`).
        """
        median = statistics.median_low(self._sizes) if self._sizes else None
        big = median is not None and len(self._sizes) >= MIN_SIZES_FOR_BIG and source_bytes > median
        self._sizes.append(source_bytes)
        return big, size_factor(source_bytes, median)

    def _pick(
        self, exclude: set[str], affinity: bytes | None = None, big: bool = False
    ) -> Backend | None:
        backends = list(self.pool.backends.values())
        return pick(backends, self.rng, time.monotonic(), exclude, affinity, big=big)

    async def _acquire(
        self,
        exclude: set[str],
        waiting: Waiting,
        affinity: bytes | None,
        big: bool,
        factor: float = 1.0,
    ) -> Backend:
        """A backend with a free slot, waiting for one at most ``waiting.left_s`` in all.
        A big job may also hold back, within what it gains, for a faster backend to
        come free (:func:`balancer.tail.wait_choice`); that does not spend the budget.
        Jobs that have waited longest (``waiting.since``) are woken first, so a job
        turned away by a full backend keeps its place."""
        give_up_holding_at: float | None = None
        held: str | None = None  # the backend whose queue we hold back in
        token = object()
        try:
            while True:
                backend = self._pick(exclude, affinity, big)
                if backend is None and exclude:
                    # Everything else is full or down: a backend that failed this job
                    # once may still be the only one that can take it.
                    backend = self._pick(set(), affinity, big)
                if backend is not None:
                    now = time.monotonic()
                    faster = None
                    if give_up_holding_at is None or now < give_up_holding_at:
                        faster = self._faster_soon(backend, big, factor, exclude, token)
                    if faster is None:
                        return backend
                    target, _wait_s, worth_s = faster
                    if give_up_holding_at is None:
                        give_up_holding_at = now + worth_s
                        self.waited_for_faster += 1
                        log.debug(
                            "waiting_for_faster", backend=target.name, instead_of=backend.name
                        )
                    if held != target.name:  # a first hold, or for another backend now
                        self._leave_hold(held, token)
                        self._holds.setdefault(target.name, []).append(token)
                        held = target.name
                    # Woken by any change (our job there ending is one); waiting longer
                    # than expected is fine until it stops being worth it.
                    await self.pool.wait_for_change(give_up_holding_at - now, waiting.since)
                    waiting.held_s += time.monotonic() - now
                    continue
                if waiting.left_s <= 0:
                    raise NoCapacity(
                        f"no backend had a free slot within {self.settings.queue_timeout_s} s"
                    )
                if self.pool.all_down():
                    # Nothing to wait for: the client compiles locally now, not in 10 s.
                    raise NoCapacity("no backend is in rotation")
                started = time.monotonic()
                self.pool.demand()
                self._waiting += 1
                try:
                    await self.pool.wait_for_change(waiting.left_s, waiting.since)
                finally:
                    self._waiting -= 1
                waiting.left_s -= time.monotonic() - started
        finally:
            self._leave_hold(held, token)

    def _leave_hold(self, backend: str | None, token: object) -> None:
        if backend is not None:
            queue = self._holds[backend]
            queue.remove(token)
            if not queue:
                del self._holds[backend]

    def _faster_soon(
        self, chosen: Backend, big: bool, factor: float, exclude: set[str], token: object
    ) -> tuple[Backend, float, float] | None:
        """For a big job about to start on ``chosen``: a faster backend worth holding
        back for (not one that failed this job), the expected wait and how long
        waiting stays worth it; else None. Jobs that began to hold back for a backend
        before this one are ahead of it in that backend's queue."""
        if not big or self.settings.wait_for_faster <= 0 or chosen.caches_results:
            return None  # (a backend that caches results may be the job's affinity choice)
        ahead = {
            name: queue.index(token) if token in queue else len(queue)
            for name, queue in self._holds.items()
        }
        return wait_choice(
            chosen,
            [b for b in self.pool.backends.values() if b.name not in exclude],
            self._running,
            ahead,
            time.monotonic(),
            factor,
            self.settings.wait_for_faster,
        )

    def _hedge_delay(self, backend: Backend) -> float:
        if self.settings.hedge_after_s is not None:
            return self.settings.hedge_after_s
        p95 = backend.latency_quantile(0.95) or 0.0
        return max(self.settings.hedge_min_s, 3 * p95)

    def _start(self, backend: Backend, request: Request) -> asyncio.Task[Reply]:
        """Send ``request`` to ``backend`` in a task. The slot is counted at once, before
        any await (jobs woken together must see each other's choices), and given back
        when the task ends however it ends, even cancelled before it ran."""
        backend.in_flight += 1
        backend.sent += 1
        task = asyncio.create_task(self._send(backend, request))
        task.add_done_callback(lambda _: self._release(backend))
        return task

    def _release(self, backend: Backend) -> None:
        backend.in_flight -= 1
        self.pool.notify()

    def _on_pool_change(self) -> None:
        """A slot may have come free (a job ended, a report came): if nothing waits for
        one, maybe back up a slow job on a faster backend."""
        if not self._running or self._waiting or self.settings.tail_hedge <= 0:
            return
        choice = backup_choice(
            self._running,
            list(self.pool.backends.values()),
            time.monotonic(),
            self.settings.tail_hedge,
        )
        if choice is not None:
            job, backend = choice
            job.backup_to = backend.name
            job.backup.set()

    async def _send(self, backend: Backend, request: Request) -> Reply:
        """One attempt on a backend; keeps its health and latency books."""
        started = time.monotonic()
        try:
            reply = await compile_remote(
                backend.spec.host,
                backend.spec.port,
                request,
                connect_timeout_s=self.settings.connect_timeout_s,
                timeout_s=self.settings.job_timeout_s,
                limits=self.limits,
                auth=backend.spec.auth,
            )
        except TurnedAway:
            # Someone else filled it: skip it briefly (its next report, or a quarter
            # poll interval, whichever comes first, tells us more).
            backend.on_turned_away(time.monotonic(), self.pool.settings.poll_interval_s / 4)
            raise
        except ClientError as exc:
            backend.on_failure(f"job: {exc}")
            raise
        if reply.status == 0 and reply.obj:
            # Only a good compile is evidence of health (it stands in for a probe) and
            # a measure of speed: a broken compiler fails fast and would look fastest.
            backend.ok += 1
            backend.record_latency(time.monotonic() - started)
        return reply

    async def _second_backend(
        self, primary: asyncio.Task[Reply], backend: Backend, failed: set[str], running: Running
    ) -> tuple[Backend, str] | None:
        """Where to hedge ``primary`` and why ("late" or "tail"), or None when it
        finished first. A job is hedged when its reply is late (``_hedge_delay``) or
        when the tail watcher marks it for a backup on a faster backend that came free."""
        late_at = running.started + self._hedge_delay(backend)
        while True:
            backup = asyncio.ensure_future(running.backup.wait())
            try:
                await asyncio.wait(
                    {primary, backup},
                    timeout=max(0.0, late_at - time.monotonic()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                backup.cancel()
            if primary.done():
                return None
            if not running.backed_up:
                break  # late
            chosen = self.pool.backends.get(running.backup_to)
            if chosen is not None and chosen.available(time.monotonic()):
                return chosen, "tail"
            # Another job took that slot first: this one may be chosen again later.
            running.backup.clear()
        # Late: find a second backend while the first keeps its chance.
        second: Backend | None = None
        while second is None and not primary.done():
            second = self._pick(failed | {backend.name}, big=True)  # the fastest free one
            if second is None:
                waiter = asyncio.create_task(self.pool.wait_for_change(1.0))
                try:
                    await asyncio.wait({primary, waiter}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
        return (second, "late") if second is not None else None

    async def dispatch(self, request: Request) -> Outcome:
        """Get ``request`` compiled (or from the cache). Raises :class:`NoCapacity` or
        :class:`AllFailed`."""
        cacheable = why_not_cacheable(request.argv) is None
        job = job_digest(request.protocol, request.argv, request.source) if cacheable else None
        if job is not None and self.cache is not None:
            hit = await self._lookup(job, request)
            if hit is not None:
                return hit
        outcome = await self._compile(request, job)
        if job is not None and self.cache is not None and outcome.reply.status == 0:
            backend = self.pool.backends.get(outcome.backend)
            identity = backend.identity(request.argv[0]) if backend else None
            if identity is not None:  # a backend that does not say what it runs is not cached
                reply = outcome.reply
                result = CachedResult(obj=reply.obj, stderr=reply.stderr, stdout=reply.stdout)
                self.cache.put_later(cache_key(job, identity), result)
        return outcome

    async def _lookup(self, job: bytes, request: Request) -> Outcome | None:
        """A cached result from any compiler identity a healthy backend would run."""
        assert self.cache is not None
        compiler = request.argv[0]
        identities = {b.identity(compiler) for b in self.pool.backends.values() if b.healthy}
        for identity in sorted((i for i in identities if i is not None), key=lambda i: i.token):
            result = await self.cache.get(cache_key(job, identity))
            if result is not None:
                reply = Reply(request.protocol, 0, result.stderr, result.stdout, result.obj)
                return Outcome(reply, "cache", 0, False, [], cached=True)
        return None

    async def _compile(self, request: Request, affinity: bytes | None) -> Outcome:
        waiting = Waiting(self.settings.queue_timeout_s)
        tried: list[str] = []
        failed: set[str] = set()
        last_error = "no attempt made"
        failures = 0
        big, factor = self.size_hints(len(request.source))
        # A busy backend's turn-away is not a failure: it only sends us back to picking
        # (the backend counts as full until its next report). Bounded all the same.
        max_sends = self.settings.max_attempts + 2 * max(1, len(self.pool.backends))
        for attempt in range(1, max_sends + 1):
            if failures >= self.settings.max_attempts:
                break
            backend = await self._acquire(failed, waiting, affinity, big, factor)
            tried.append(backend.name)
            if attempt > 1:
                self.retries += 1
            primary = self._start(backend, request)
            running = Running(backend.name, time.monotonic(), factor)
            self._running.add(running)
            try:
                reply, winner, hedged = await self._with_hedge(
                    primary, backend, request, failed, running
                )
            except TurnedAway as exc:
                last_error = f"{backend.name}: {exc}"
                log.debug("attempt_turned_away", backend=backend.name, attempt=attempt)
                continue
            except ClientError as exc:
                failures += 1
                failed.add(backend.name)
                last_error = f"{backend.name}: {exc}"
                log.info(
                    "attempt_failed",
                    backend=backend.name,
                    attempt=attempt,
                    error=type(exc).__name__,
                    reason=str(exc),
                )
                continue
            finally:
                self._running.discard(running)
                if self._holds:
                    # Jobs holding back may have counted on this one's end: let them
                    # look again now that it is not running any more.
                    self.pool.notify()
                # Cancelled (the client left) or done: never leave a backend call behind.
                if not primary.done():
                    primary.cancel()
            queued = self.settings.queue_timeout_s - waiting.left_s + waiting.held_s
            return Outcome(reply, winner, attempt, hedged, tried, queued_s=queued)
        raise AllFailed(last_error)

    async def _with_hedge(
        self,
        primary: asyncio.Task[Reply],
        backend: Backend,
        request: Request,
        failed: set[str],
        running: Running,
    ) -> tuple[Reply, str, bool]:
        found = await self._second_backend(primary, backend, failed, running)
        if found is None:
            return primary.result(), backend.name, False
        second, reason = found
        self.hedges += 1
        if reason == "tail":
            self.tail_hedges += 1
        log.info("job_hedged", reason=reason, slow_backend=backend.name, hedge_backend=second.name)
        hedge = self._start(second, request)
        owners = {primary: backend.name, hedge: second.name}
        pending: set[asyncio.Task[Reply]] = {primary, hedge}
        errors: list[BaseException] = []
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                outcomes = {task: task.exception() for task in done}  # every one retrieved
                for task, exc in outcomes.items():
                    if exc is None:
                        if task is hedge:
                            self.hedge_wins += 1
                        return task.result(), owners[task], True
                    if not isinstance(exc, TurnedAway):
                        failed.add(owners[task])  # neither backend gets this job again
                    errors.append(exc)
            # Both failed: a real failure counts against the job before a turn-away does.
            raise next((e for e in errors if not isinstance(e, TurnedAway)), errors[0])
        finally:
            for task in pending:
                task.cancel()
            # The losers' errors, their cancellation included, come back as values; our
            # own cancellation (the client left) propagates.
            await asyncio.gather(*pending, return_exceptions=True)
