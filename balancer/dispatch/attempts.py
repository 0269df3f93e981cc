"""What one job tries, and how it ends: the dispatcher's settings and records
(balancer/dispatch/dispatcher.py runs the attempt loop over them)."""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field

import structlog

from balancer.dispatch.acquire import Allow
from balancer.routing.backend import Backend
from balancer.routing.compilers import CompilerMissing
from balancer.routing.estimates import Running
from balancer.routing.fair import Share
from balancer.settings import DispatchSettings
from client import TurnedAway
from wire import Reply, Request

log = structlog.get_logger("distlb.balancer.dispatch")

TIMER_SLACK_S = 0.002
"""Added to a wait for a time: uvloop rounds a timer to whole milliseconds and counts
from its cached clock, so a wait of exactly the time left ended before it, dozens of
times in a row (review 26: 43-77 turns a wake)."""
MAX_TURNED_AWAY = 64
"""Turn-aways one job may meet (each is a wait, bounded by the queue timeout too)."""


class Step(enum.Enum):
    """What a job does next (:meth:`JobAttempts.next_step`)."""

    GIVE_UP_FAILED = "give_up_failed"
    """Its failures reached ``max_attempts``: the client compiles it."""
    GIVE_UP_SENDS = "give_up_sends"
    """Nothing runs, and it was sent (or turned away) as often as a job may be."""
    ACQUIRE = "acquire"
    """Nothing runs: wait for a slot, for its first attempt or a retry."""
    RESCUE = "rescue"
    """Every attempt runs on a backend out of rotation: send a copy elsewhere now."""
    HEDGE = "hedge"
    """It may be backed up, if it is late or a much faster backend is free."""
    WAIT = "wait"
    """Wait for what runs (no more copies: its sends or hedges are spent)."""


@dataclass
class Dispatched:
    """How a job was answered: the reply, and where it came from."""

    reply: Reply
    backend: str
    attempts: int
    hedged: bool
    tried: list[str] = field(default_factory=list)
    cached: bool = False
    queued_s: float = 0.0
    """Time spent waiting for a backend with a free slot."""
    history: list[dict[str, object]] = field(default_factory=list)
    """Every attempt: backend, kind, result, backend_conn."""
    backend_conn: str = ""
    """The local ``IP:PORT`` of the answering attempt's connection to its backend: the
    ``peer`` a distlb server logs for the same job ("" from the cache)."""


@dataclass
class BackendConn:
    """An attempt's connection to its backend, as both ends log it."""

    local: str = ""
    """Our ``IP:PORT`` on it ("" until connected, or when it never was)."""

    def made(self, local: str) -> None:
        self.local = local


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
    conn: BackendConn = field(default_factory=BackendConn)


class Wake:
    """An event a job's loop waits on, as a plain future (no task per wait): set when
    something the job may act on changed; cleared after each wait."""

    def __init__(self) -> None:
        self._set = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._set = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    def future(self) -> asyncio.Future[None]:
        """A future done when (or once) this is set."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._set:
            waiter.set_result(None)
        self._waiter = waiter
        return waiter


@dataclass(eq=False)
class JobAttempts:
    """Everything one job has tried, and what it is waiting on."""

    request: Request
    big: bool
    factor: float
    affinity: bytes | None
    encoded: bytes | None = None
    """The request's bytes, made once for every attempt (retries and hedges)."""
    running: list[Attempt] = field(default_factory=list)
    history: list[Attempt] = field(default_factory=list)
    failed: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)
    """Backends that answered it "no such compiler" (balancer/routing/compilers.py)."""
    allow: Allow | None = None
    """Whether it may go to a backend, asked at every pick (a pump job's route)."""
    share: Share | None = None
    """Its client's share of the farm (balancer/routing/fair.py)."""
    failures: int = 0
    hedges: int = 0
    last_error: str = "no attempt made"
    winner: Attempt | None = None
    wake: Wake = field(default_factory=lambda: Wake())
    """Set when something the job may act on changed: a backend it runs on left
    rotation, or a faster backend came free for a tail hedge."""

    @property
    def compiler(self) -> str:
        return self.request.argv[0]

    @property
    def sends(self) -> int:
        """Attempts that were not turned away."""
        return sum(1 for a in self.history if a.result != "turned_away")

    def next_step(self, settings: DispatchSettings, max_sends: int) -> Step:
        """The retry rules, after :meth:`record` took in what ended: give up once its
        failures reach ``max_attempts`` (a turn-away is no failure, nor a copy
        cancelled) or, with nothing running, once it was sent ``max_sends`` times or
        turned away :data:`MAX_TURNED_AWAY` times beyond that; with nothing running,
        acquire a slot; a copy elsewhere at once when every attempt sits on a backend
        out of rotation; a hedge while fewer than ``max_hedges`` ran; else wait."""
        if not self.running:
            if self.failures >= settings.max_attempts:
                return Step.GIVE_UP_FAILED
            if self.sends >= max_sends or len(self.history) >= MAX_TURNED_AWAY + max_sends:
                return Step.GIVE_UP_SENDS
            return Step.ACQUIRE
        if self.sends >= max_sends:
            return Step.WAIT
        if not any(a.backend.healthy for a in self.running):
            return Step.RESCUE
        if self.hedges >= settings.max_hedges:
            return Step.WAIT
        return Step.HEDGE

    def end(self, attempt: Attempt, result: str) -> None:
        attempt.result = attempt.result or result

    def record(self, attempt: Attempt) -> Reply | None:
        """Write down how ``attempt`` (its task done, out of :attr:`running`) ended:
        its reply, when it won; else None, with why it did not (cancelled; the backend
        lacks the compiler after all, which is not the job's failure: where its
        compiler is has changed; turned away, which spends no failure, nor a hedge for
        a copy that never ran; or failed)."""
        if attempt.task.cancelled():
            self.end(attempt, "cancelled")
            return None
        exc = attempt.task.exception()
        if exc is None:
            self.winner = attempt
            self.end(attempt, "ok")
            return attempt.task.result()
        name = attempt.backend.name
        self.last_error = f"{name}: {exc}"
        if isinstance(exc, CompilerMissing):
            self.refused.add(name)
            self.end(attempt, "no_compiler")
            log.info("attempt_no_compiler", backend=name, compiler=self.request.argv[0])
        elif isinstance(exc, TurnedAway):
            self.end(attempt, "turned_away")
            if attempt.kind in ("late", "tail"):
                self.hedges -= 1
            log.debug("attempt_turned_away", backend=name, attempt=len(self.history))
        else:
            self.failures += 1
            self.failed.add(name)
            self.end(attempt, f"failed: {type(exc).__name__}")
            log.info("attempt_failed", backend=name, attempt=len(self.history),
                     error=type(exc).__name__, reason=str(exc))  # fmt: skip
        return None

    def missed_deadline(self, attempt: Attempt, settings: DispatchSettings) -> str | None:
        """``attempt`` got no reply by its deadline (it is ended). Returns the reason to
        charge its backend with; None when the backend compiled probes or other jobs
        well meanwhile: then this job, not the backend, outlived its deadline (a source
        can make a compile hang), and it is neither charged to the backend nor sent on
        to hang another backend's slot: it ends, and its client compiles it."""
        seconds = round(attempt.deadline - attempt.started, 1)
        backend = attempt.backend
        self.end(attempt, "deadline")
        if backend.proven_at > attempt.started:
            self.failures = max(self.failures + 1, settings.max_attempts)
            self.hedges = settings.max_hedges
            self.last_error = (f"{backend.name}: no reply within {seconds} s (its deadline), "
                               "while the backend compiled others")  # fmt: skip
            return None
        reason = f"job: no reply within {seconds} s (its deadline)"
        self.failures += 1
        self.failed.add(backend.name)
        self.last_error = f"{backend.name}: {reason}"
        return reason

    async def wait_for_next(
        self,
        acquiring: asyncio.Task[Backend] | None,
        change: Coroutine[None, None, None] | None,
        max_hedges: int,
        looked: float,
    ) -> None:
        """Until an attempt ends, a backend is acquired, the job is woken (a backend
        left rotation, a faster one came free), ``change`` ends (the pool changed: a
        hedge that found no free backend waits for one) or its next deadline comes
        (:func:`wake_at`; ``looked``: when the loop last enforced deadlines and
        decided on hedges)."""
        waits: set[asyncio.Future[object]] = {a.task for a in self.running}  # type: ignore[misc]
        if acquiring is not None:
            waits.add(acquiring)  # type: ignore[arg-type]
        woken = self.wake.future()
        waits.add(woken)  # type: ignore[arg-type]
        changed = None
        if change is not None:
            changed = asyncio.ensure_future(change)
            waits.add(changed)  # type: ignore[arg-type]
        wake = wake_at(self.running, self.hedges < max_hedges, looked)
        timeout = None
        if wake is not None:
            left = wake - time.monotonic()
            timeout = left + TIMER_SLACK_S if left > 0 else 0.0
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            if changed is not None:
                changed.cancel()
            self.wake.clear()

    def answer(self, reply: Reply, queued_s: float) -> Dispatched:
        """How the job was answered: by :attr:`winner`'s ``reply``; the copies still
        running are closed once it is sent."""
        winner = self.winner
        assert winner is not None
        for attempt in self.running:
            self.end(attempt, "closed")
        return Dispatched(
            reply,
            winner.backend.name,
            len(self.history),
            any(a.kind in ("late", "tail", "rescue") for a in self.history),
            [a.backend.name for a in self.history],
            queued_s=queued_s,
            history=self.describe(),
            backend_conn=winner.conn.local,
        )

    def describe(self) -> list[dict[str, object]]:
        """Every attempt, for the job_done line: backend, why it was sent, how it ended,
        and our end of its connection (the backend's ``peer``; "" if none was made)."""
        return [
            {"backend": a.backend.name, "kind": a.kind, "result": a.result or "running",
             "backend_conn": a.conn.local}
            for a in self.history
        ]  # fmt: skip


def wake_at(running: list[Attempt], may_hedge: bool, looked: float) -> float | None:
    """When a job with ``running`` attempts must look again, after it last looked at
    ``looked`` (enforced deadlines, decided on hedges): at its earliest deadline, or
    when its copies become late if it ``may_hedge`` and they were not late yet then. Both
    are judged at ``looked``, not at the wait's own clock: a time that passed in between
    (by microseconds) was once skipped, and CI met a job a minute past its 3 s deadline,
    asleep until its hedge time. A late time already past when it looked does not wake it
    (late with nothing free, it waits for a change). None with nothing running (it waits
    for a slot, which has its own bound)."""
    if not running:
        return None
    wake = min(a.deadline for a in running)
    late = max(a.late_at for a in running)
    if may_hedge and late > looked:
        wake = min(wake, late)
    return wake


def attempt_deadline(settings: DispatchSettings, backend: Backend, factor: float) -> float:
    """How long an attempt may go without its reply: the absolute bound, or much less
    for a backend whose own history says its replies come fast (``factor``: the job's
    size over the median's)."""
    p99 = backend.latency_quantile(0.99)
    if p99 is None:
        return settings.attempt_timeout_s
    derived = max(settings.attempt_deadline_min_s, settings.attempt_deadline_factor * p99 * factor)
    return min(settings.attempt_timeout_s, derived)
