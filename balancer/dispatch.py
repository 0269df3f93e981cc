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
import time
from dataclasses import dataclass, field

import structlog

from balancer.backends import Backend, SortedWindow
from balancer.hedge import TailWatcher, hedge_delay, next_hedge
from balancer.pool import Pool
from balancer.queue import Acquire, NoCapacity, Waiting, acquire
from balancer.tail import Running, size_factor, wait_choice
from cache import CachedResult, ResultCache, cache_key, job_digest, why_not_cacheable
from client import ClientError, TurnedAway, compile_remote
from wire import Limits, Reply, Request

log = structlog.get_logger("distlb.balancer.dispatch")

HOLD_WANTS_CHANGES_S = 30.0
"""A job that holds back for a faster backend hears of the other workers' freed slots
this long (holding back pays for a few seconds at most: balancer/tail.py)."""

MAX_TURNED_AWAY = 64
"""Turn-aways one job may meet (each is a wait, bounded by the queue timeout too)."""
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
    attempt_timeout_s: float = 1500.0
    """Longest wait for one backend's reply (beyond a server's 1200 s job lifetime)."""
    attempt_deadline_factor: float = 20.0
    """An attempt on a backend with a latency history gives up after this many times
    its p99 (scaled by the job's size), but never before ``attempt_deadline_min_s``."""
    attempt_deadline_min_s: float = 60.0
    backend_idle_timeout_s: float = 10.0
    """Sending a request, or receiving a reply once it has begun, may pause this long
    (plus a second per MiB): a backend that hangs or trickles mid-transfer is caught."""
    max_hedges: int = 2
    """Late and tail hedges per job (rescues from a backend that left rotation are
    bounded by the attempts instead)."""


class AllFailed(Exception):
    """Every attempt failed; the last reason is the message."""

    history: list[dict[str, object]] = []


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
    history: list[dict[str, object]] = field(default_factory=list)
    """Every attempt: backend, kind, result."""


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
        self.rescues = 0
        self.deadlines = 0
        self.cache = cache
        self._sizes = SortedWindow(SIZE_WINDOW)
        self._running: set[Running] = set()
        self.waited_for_faster = 0
        self._jobs: set[JobAttempts] = set()
        self.tail = TailWatcher(
            pool.roster,
            self._running,
            settings.tail_hedge,
            lambda: self._waiting,
            self._wake_backed_up,
        )
        pool.add_listener(self.tail.changed)
        pool.add_down_listener(self._on_backend_down)

    def size_hints(self, source_bytes: int) -> tuple[bool, float]:
        """Whether a job is big (larger than the median of recent jobs, once enough are
        known) and its size over that median (clamped); remembers its size.

        The preprocessed size is the one hint of a job's cost that we have before it
        runs: big jobs go to the fastest free backend (:func:`balancer.picker.pick`), and
        the factor scales its expected time for tail hedging (:mod:`balancer.tail`).
        """
        median = self._sizes.median_low()
        big = median is not None and len(self._sizes) >= MIN_SIZES_FOR_BIG and source_bytes > median
        self._sizes.append(source_bytes)
        return big, size_factor(source_bytes, median)

    def _pick(
        self, exclude: set[str], affinity: bytes | None = None, big: bool = False
    ) -> Backend | None:
        return self.pool.roster.pick(self.rng, time.monotonic(), exclude, affinity, big=big)

    @property
    def _waiting(self) -> int:
        """Jobs waiting for a free slot: while any do, a slot is not to spare."""
        return self.pool.queue.waiting_for_slot

    @property
    def _holds(self) -> dict[str, list[object]]:
        """Per backend, the big jobs holding back for it to come free (balancer/queue.py)."""
        return self.pool.queue.holds

    async def _acquire(
        self,
        exclude: set[str],
        waiting: Waiting,
        affinity: bytes | None,
        big: bool,
        factor: float = 1.0,
    ) -> Backend:
        """A backend with a free slot, waiting for one at most ``waiting.left_s`` in all
        (balancer/queue.py). A big job may also hold back, within what it gains, for a
        faster backend to come free (:func:`balancer.tail.wait_choice`); that does not
        spend the budget."""

        def pick() -> Backend | None:
            backend = self._pick(exclude, affinity, big)
            if backend is None and exclude:
                # Everything else is full or down: a backend that failed this job
                # once may still be the only one that can take it.
                backend = self._pick(set(), affinity, big)
            return backend

        def hold(chosen: Backend, token: object) -> tuple[Backend, float, float] | None:
            return self._faster_soon(chosen, big, factor, exclude, token)

        def on_hold(target: Backend, instead_of: Backend) -> None:
            self.pool.want_changes(HOLD_WANTS_CHANGES_S)
            self.waited_for_faster += 1
            log.debug("waiting_for_faster", backend=target.name, instead_of=instead_of.name)

        how = Acquire(
            pick=pick,
            all_down=self.pool.all_down,
            queue_timeout_s=self.settings.queue_timeout_s,
            hold=hold,
            on_wait=self.pool.demand,
            on_hold=on_hold,
            # The slot is taken in the same step as the pick: the job launches on it
            # only once its loop runs again, and jobs woken meanwhile must see it taken.
            reserve=Backend.reserve,
        )
        return await acquire(self.pool.queue, how, waiting)

    def _faster_soon(
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
        ours = {r.backend for r in self._running} - exclude
        candidates = [backends[name] for name in ours if name in backends]
        return wait_choice(
            chosen,
            candidates,
            self._running,
            ahead,
            time.monotonic(),
            factor,
            self.settings.wait_for_faster,
            self.pool.roster.costs,
        )

    def _start(self, backend: Backend, request: Request) -> asyncio.Task[Reply]:
        """Send ``request`` to ``backend`` in a task, on the slot reserved for it
        (:meth:`Backend.reserve`, before any await: jobs woken together must see each
        other's choices), given back when the task ends however it ends, even
        cancelled before it ran."""
        backend.sent += 1
        task = asyncio.create_task(self._send(backend, request))
        task.add_done_callback(lambda _: self._release(backend))
        return task

    def _release(self, backend: Backend) -> None:
        backend.in_flight -= 1
        self.pool.notify()

    def _on_backend_down(self, backend: Backend) -> None:
        """Wake the jobs running on a backend that left rotation (they rescue)."""
        for job in self._jobs:
            if any(a.backend is backend for a in job.running):
                job.wake.set()

    def _wake_backed_up(self, running: Running) -> None:
        """The tail watcher chose ``running`` for a backup: wake its job."""
        for job in self._jobs:
            if any(a.running is running for a in job.running):
                job.wake.set()

    async def _send(self, backend: Backend, request: Request) -> Reply:
        """One attempt on a backend; keeps its health and latency books."""
        started = time.monotonic()
        try:
            reply = await compile_remote(
                backend.spec.host,
                backend.spec.port,
                request,
                connect_timeout_s=self.settings.connect_timeout_s,
                timeout_s=self.settings.attempt_timeout_s,
                idle_timeout_s=self.settings.backend_idle_timeout_s,
                limits=self.limits,
                auth=backend.spec.auth,
            )
        except TurnedAway:
            # Someone else filled it: skip it briefly (its next report, or a quarter
            # poll interval, whichever comes first, tells us more).
            hold_s = self.pool.settings.poll_interval_s / 4
            backend.on_turned_away(time.monotonic(), hold_s)
            self.pool.report_stale(backend)
            # When the hold ends it may take jobs again: wake those waiting for a slot.
            asyncio.get_running_loop().call_later(hold_s, self.pool.notify)
            raise
        except ClientError as exc:
            self.pool.mark_failure(backend, f"job: {exc}")
            raise
        if reply.status == 0 and reply.obj:
            # Only a good compile is evidence of health (it stands in for a probe) and
            # a measure of speed: a broken compiler fails fast and would look fastest.
            backend.ok += 1
            backend.record_latency(time.monotonic() - started)
        return reply

    async def dispatch(self, request: Request) -> Outcome:
        """Get ``request`` compiled (or from the cache). Raises :class:`NoCapacity` or
        :class:`AllFailed`."""
        # The job's digest keys the cache and is its affinity to a caching backend:
        # without either, hashing every source is work for nothing.
        wanted = self.cache is not None or self.pool.roster.any_caching
        job = None
        if wanted and why_not_cacheable(request.argv) is None:
            job = job_digest(request.protocol, request.argv, request.source)
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
        """The attempt loop: one attempt at first; a retry when one fails (within
        ``max_attempts`` failures); a hedge when the reply is late or a much faster
        backend comes free; a rescue at once when every running attempt is on a
        backend that has left rotation; and a deadline on every attempt. The first good
        reply wins and the others are closed."""
        waiting = self.pool.queue.waiting(self.settings.queue_timeout_s)
        big, factor = self.size_hints(len(request.source))
        job = JobAttempts(request, big, factor, affinity)
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
                self._enforce_deadlines(job)
                if acquiring is not None and acquiring.done():
                    try:
                        backend = acquiring.result()
                    except NoCapacity:
                        if not job.running:
                            raise
                    else:
                        self._launch(
                            job, backend, "retry" if job.history else "first", reserved=True
                        )
                    acquiring = None
                    continue
                if not job.running and job.failures >= self.settings.max_attempts:
                    raise AllFailed(job.last_error)
                if not job.running and (
                    job.sends >= max_sends or len(job.history) >= MAX_TURNED_AWAY + max_sends
                ):
                    raise AllFailed(f"{len(job.history)} attempts: {job.last_error}")
                wants_change = False
                if acquiring is None:
                    acquiring, wants_change = self._next_move(job, waiting, max_sends)
                await self._wait(job, acquiring, wants_change)
        except (NoCapacity, AllFailed) as exc:
            exc.history = job.describe()
            raise
        finally:
            self._jobs.discard(job)
            if acquiring is not None:
                # A slot it reserved but never launched on is given back, now or when
                # the acquiring ends (before any await here: a second cancel must not
                # skip it).
                acquiring.add_done_callback(self._release_reserved)
                acquiring.cancel()
            for attempt in job.running:
                attempt.task.cancel()
            # The losers' errors, their cancellation included, come back as values; our
            # own cancellation (the client left) propagates.
            await asyncio.gather(*(a.task for a in job.running), return_exceptions=True)
            if acquiring is not None:
                await asyncio.gather(acquiring, return_exceptions=True)
            for attempt in job.running:
                job.end(attempt, "closed")
            self._running.difference_update(a.running for a in job.history)
            if self._holds:
                # Jobs holding back may have counted on this one's end: let them
                # look again now that it is not running any more.
                self.pool.notify()

    def _release_reserved(self, acquiring: asyncio.Task[Backend]) -> None:
        if not acquiring.cancelled() and acquiring.exception() is None:
            self._release(acquiring.result())

    def _next_move(
        self, job: JobAttempts, waiting: Waiting, max_sends: int
    ) -> tuple[asyncio.Task[Backend] | None, bool]:
        """Start what the job needs now; returns a task acquiring a backend (when it
        must wait for one) and whether it waits for the pool to change (a hedge that
        found no free backend yet)."""
        exclude = job.failed | {a.backend.name for a in job.running}
        if not job.running:
            return asyncio.create_task(
                self._acquire(job.failed, waiting, job.affinity, job.big, job.factor)
            ), False
        if job.sends >= max_sends:
            return None, False
        if not any(a.backend.healthy for a in job.running):
            # Every attempt sits on a backend out of rotation: send it elsewhere now.
            backend = self._pick(exclude, big=True)
            if backend is not None:
                self._launch(job, backend, "rescue")
                return None, False
            return asyncio.create_task(
                self._acquire(exclude, waiting, None, True, job.factor)
            ), False
        if job.hedges >= self.settings.max_hedges:
            return None, False
        kind, backend = next_hedge(
            job.running,
            self.pool.backends,
            exclude,
            lambda: self._pick(exclude, big=True),  # the fastest free one
            time.monotonic(),
        )
        if backend is not None:
            self._launch(job, backend, kind)
            return None, False
        return None, kind == "late"  # late, but nothing free: wait for a change

    async def _wait(
        self, job: JobAttempts, acquiring: asyncio.Task[Backend] | None, wants_change: bool
    ) -> None:
        """Until an attempt ends, a backend is acquired, the job is woken (a backend
        left rotation, a faster one came free) or its next deadline comes."""
        now = time.monotonic()
        waits: set[asyncio.Future[object]] = {a.task for a in job.running}  # type: ignore[misc]
        if acquiring is not None:
            waits.add(acquiring)  # type: ignore[arg-type]
        woken = asyncio.ensure_future(job.wake.wait())
        waits.add(woken)  # type: ignore[arg-type]
        changed = None
        if wants_change:
            changed = asyncio.ensure_future(self.pool.wait_for_change(1.0))
            waits.add(changed)  # type: ignore[arg-type]
        times = [a.deadline for a in job.running]
        if job.running and job.hedges < self.settings.max_hedges:
            times.append(max(a.late_at for a in job.running))
        future = [t for t in times if t > now]
        timeout = (min(future) - now) if future else (None if times == [] else 0.0)
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            if changed is not None:
                changed.cancel()
            job.wake.clear()

    def _launch(
        self, job: JobAttempts, backend: Backend, kind: str, reserved: bool = False
    ) -> None:
        if not reserved and not backend.reserve():
            # Another worker took its last slot since the pick: the job's loop picks
            # again at its next turn (the pick index knows now).
            log.debug("slot_taken_meanwhile", backend=backend.name, attempt=kind)
            return
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
        attempt = Attempt(
            backend=backend,
            task=self._start(backend, job.request),
            running=running,
            kind=kind,
            started=now,
            late_at=now
            + hedge_delay(backend, self.settings.hedge_after_s, self.settings.hedge_min_s),
            deadline=now + self._attempt_deadline(backend, job.factor),
        )
        job.running.append(attempt)
        job.history.append(attempt)
        self._running.add(running)

    def _attempt_deadline(self, backend: Backend, factor: float) -> float:
        """How long an attempt may go without its reply: the absolute bound, or much
        less for a backend whose own history says its replies come fast."""
        settings = self.settings
        p99 = backend.latency_quantile(0.99)
        if p99 is None:
            return settings.attempt_timeout_s
        derived = max(
            settings.attempt_deadline_min_s, settings.attempt_deadline_factor * p99 * factor
        )
        return min(settings.attempt_timeout_s, derived)

    def _harvest(self, job: JobAttempts) -> Reply | None:
        """Take in the attempts that ended: a reply wins; a failure or a turn-away is
        written down (the loop then decides what to start instead)."""
        for attempt in [a for a in job.running if a.task.done()]:
            job.running.remove(attempt)
            self._running.discard(attempt.running)
            if attempt.task.cancelled():
                job.end(attempt, "cancelled")
                continue
            exc = attempt.task.exception()
            if exc is None:
                job.winner = attempt
                job.end(attempt, "ok")
                return attempt.task.result()
            name = attempt.backend.name
            job.last_error = f"{name}: {exc}"
            if isinstance(exc, TurnedAway):
                job.end(attempt, "turned_away")
                if attempt.kind in ("late", "tail"):
                    job.hedges -= 1  # a copy that never ran spends no hedge
                log.debug("attempt_turned_away", backend=name, attempt=len(job.history))
                continue
            job.failures += 1
            job.failed.add(name)
            job.end(attempt, f"failed: {type(exc).__name__}")
            log.info("attempt_failed", backend=name, attempt=len(job.history),
                     error=type(exc).__name__, reason=str(exc))  # fmt: skip
        return None

    def _enforce_deadlines(self, job: JobAttempts) -> None:
        now = time.monotonic()
        for attempt in [a for a in job.running if now >= a.deadline]:
            attempt.task.cancel()
            job.running.remove(attempt)
            self._running.discard(attempt.running)
            seconds = round(attempt.deadline - attempt.started, 1)
            reason = f"job: no reply within {seconds} s (its deadline)"
            self.pool.mark_failure(attempt.backend, reason)
            job.failures += 1
            job.failed.add(attempt.backend.name)
            job.last_error = f"{attempt.backend.name}: {reason}"
            job.end(attempt, "deadline")
            self.deadlines += 1
            log.warning("attempt_deadline", backend=attempt.backend.name, after_s=seconds)

    def _won(self, job: JobAttempts, reply: Reply, waiting: Waiting) -> Outcome:
        assert job.winner is not None
        winner = job.winner
        for attempt in job.running:
            job.end(attempt, "closed")  # the losers: closed once the winner is sent
        if winner.kind in ("late", "tail", "rescue"):
            self.hedge_wins += 1
        queued = self.settings.queue_timeout_s - waiting.left_s + waiting.held_s
        return Outcome(
            reply,
            winner.backend.name,
            len(job.history),
            any(a.kind in ("late", "tail", "rescue") for a in job.history),
            [a.backend.name for a in job.history],
            queued_s=queued,
            history=job.describe(),
        )


@dataclass(eq=False)
class Attempt:
    """One sending of a job to one backend."""

    backend: Backend
    task: asyncio.Task[Reply]
    running: Running
    kind: str
    """first, retry (after a failure or turn-away), late or tail (hedges), rescue."""
    started: float
    late_at: float
    deadline: float
    result: str = ""


@dataclass(eq=False)
class JobAttempts:
    """Everything one job has tried, and what it is waiting on."""

    request: Request
    big: bool
    factor: float
    affinity: bytes | None
    running: list[Attempt] = field(default_factory=list)
    history: list[Attempt] = field(default_factory=list)
    failed: set[str] = field(default_factory=set)
    failures: int = 0
    hedges: int = 0
    last_error: str = "no attempt made"
    winner: Attempt | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when something the job may act on changed: a backend it runs on left
    rotation, or a faster backend came free for a tail hedge."""

    @property
    def sends(self) -> int:
        """Attempts that were not turned away."""
        return sum(1 for a in self.history if a.result != "turned_away")

    def end(self, attempt: Attempt, result: str) -> None:
        attempt.result = attempt.result or result

    def describe(self) -> list[dict[str, object]]:
        """Every attempt, for the job_done line: backend, why it was sent, how it ended."""
        return [
            {"backend": a.backend.name, "kind": a.kind, "result": a.result or "running"}
            for a in self.history
        ]
