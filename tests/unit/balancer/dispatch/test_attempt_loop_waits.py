"""How the attempt loop waits (balancer/dispatch/dispatcher.py ``_compile``,
balancer/dispatch/attempts.py ``wait_for_next``, balancer/dispatch/hedge.py): it wakes
for a deadline or a late time that passed since it last looked, never spins when there
is nowhere to send a copy, and a copy it cannot make for a tail backup still leaves a
late job its late copy (review 26)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import uvloop

from balancer.dispatch.attempts import Attempt, JobAttempts, wake_at
from balancer.dispatch.dispatcher import Dispatcher
from balancer.dispatch.hedge import next_hedge
from balancer.errors import NotDispatched
from balancer.pool.pool import Pool
from balancer.routing.backend import Backend, BackendReport, BackendSpec
from balancer.routing.estimates import Running
from balancer.settings import DispatchSettings, PoolSettings
from wire import Limits, Request

REQUEST = Request(protocol=1, argv=("gcc", "-c", "a.c", "-o", "a.o"), source=b"int a;\n")
GCC = {"gcc": ("gcc (Debian 12.2.0-14) 12.2.0", "d1")}


def _backend(name: str, busy: int = 0) -> Backend:
    backend = Backend(BackendSpec.parse(f"{name}:1"))
    backend.on_report(BackendReport(slots=1, busy=busy, compilers=GCC))
    backend.on_success()
    return backend


def _attempt(backend: Backend, started: float, late_at: float, deadline: float) -> Attempt:
    task: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    return Attempt(backend, task, Running(backend.name, started, 1.0), "first",  # type: ignore[arg-type]
                   started, late_at=late_at, deadline=deadline)  # fmt: skip


@pytest.mark.asyncio
@pytest.mark.parametrize("which", ["deadline", "late"])
async def test_a_time_passed_after_the_loop_looked_ends_the_wait_at_once(which: str) -> None:
    """The wait is judged at the loop's own reading of the clock (``looked``): a time
    that passed after it, by a fraction of a millisecond, still wakes the job, where the
    wait once read the clock again and slept on to the next time (a minute)."""
    job = JobAttempts(REQUEST, big=False, factor=1.0, affinity=None)
    now = time.monotonic()
    attempt = _attempt(_backend("a"), now - 3, late_at=now + 60, deadline=now + 60)
    if which == "deadline":
        attempt.deadline = now - 1e-4
    else:
        attempt.late_at = now - 1e-4
    job.running = [attempt]
    async with asyncio.timeout(30):  # (asleep until the other time, 60 s: a failure)
        await job.wait_for_next(None, None, 2, looked=now - 2e-4)


@pytest.mark.asyncio
async def test_with_nowhere_to_rescue_to_the_job_waits_for_a_change_not_round() -> None:
    """Its only backend leaves rotation while its compile runs there: a rescue finds no
    backend (NoCapacity at once). The loop once asked again at once, thousands of times
    a second until the deadline; now it waits for a change or what runs."""
    lone = _backend("a")
    pool = Pool([], PoolSettings())  # (never started)
    pool.backends = {lone.name: lone}
    dispatcher = Dispatcher(pool, DispatchSettings(attempt_timeout_s=0.5), Limits())
    started = asyncio.get_running_loop().create_future()

    async def hang(*_args: object, **_kwargs: object) -> None:
        started.set_result(None)
        await asyncio.sleep(3600)  # (the compile runs on: a slow, overloaded backend)

    dispatcher.sender.send = hang  # type: ignore[assignment,method-assign]
    asks = 0
    acquire = dispatcher.slots.acquire

    async def counted(*args: Any, **kwargs: Any) -> Backend:
        nonlocal asks
        asks += 1
        return await acquire(*args, **kwargs)

    dispatcher.slots.acquire = counted  # type: ignore[method-assign]
    job = asyncio.create_task(dispatcher.dispatch(REQUEST))
    await started
    lone.on_failure("probe: no reply")
    lone.on_failure("probe: no reply")  # (out of rotation)
    assert not lone.healthy
    dispatcher._on_backend_down(lone)
    with pytest.raises(NotDispatched):  # (its deadline, then nowhere to go)
        await job
    assert asks <= 3, asks


@pytest.mark.asyncio
async def test_a_late_job_whose_tail_backup_cannot_be_made_gets_its_late_copy() -> None:
    slow, fast, other = _backend("slow"), _backend("fast"), _backend("other")
    backends = {b.name: b for b in (slow, fast, other)}
    now = time.monotonic()
    attempt = _attempt(slow, now - 10, late_at=now - 5, deadline=now + 50)
    attempt.running.backup_to = "fast"  # (the tail watcher's choice, refused to this job)
    attempt.running.backup.set()
    found = next_hedge([attempt], backends, {"fast", "slow"}, lambda: other, now)
    assert found == ("late", other)


def test_a_timed_wait_on_uvloop_ends_after_its_time_in_a_turn_or_two() -> None:
    """uvloop rounds timers to whole milliseconds and counts from a cached clock: a wait
    of exactly the time left ended before it, dozens of times in a row (43-77)."""

    async def turns() -> int:
        job = JobAttempts(REQUEST, big=False, factor=1.0, affinity=None)
        now = time.monotonic()
        job.running = [_attempt(_backend("a"), now, late_at=now + 99, deadline=now + 0.0004)]
        count = 0
        while (looked := time.monotonic()) < job.running[0].deadline:
            count += 1
            assert wake_at(job.running, False, looked) == job.running[0].deadline
            await job.wait_for_next(None, None, 0, looked)
        return count

    # (a turn or two; a process descheduled between the loop's clock and the timer may
    # take a few more now and then: the median says which, the bug made dozens)
    counts = sorted(uvloop.run(turns()) for _ in range(21))
    assert counts[10] <= 3, counts
