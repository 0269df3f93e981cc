"""The dispatcher's waiting (balancer/dispatch/dispatcher.py). For a faster backend: a big
job holds back while one of our jobs on a much faster backend is about to end, takes
that backend when it does, and gives up waiting once waiting no longer pays. For a
free slot: not at all when no backend is in rotation."""

from __future__ import annotations

import asyncio
import time

import pytest

from balancer.dispatch.dispatcher import Dispatcher
from balancer.errors import NoCapacity
from balancer.pool.pool import Pool
from balancer.routing.backend import Backend, BackendReport, BackendSpec
from balancer.routing.estimates import Running
from balancer.routing.queue import Waiting
from balancer.settings import DispatchSettings, PoolSettings
from wire import Limits

pytestmark = pytest.mark.asyncio

SLOW_S, FAST_S = 0.4, 0.1  # seconds per median job: the fast backend is 4 x faster
BIG = 2.0  # the job's size over the median's


def _backend(name: str, latency_s: float, busy: int) -> Backend:
    backend = Backend(BackendSpec.parse(f"{name}:1"))
    backend.on_report(BackendReport(slots=1, busy=0))
    backend.on_success()
    backend.in_flight = busy
    for _ in range(10):
        backend.record_latency(latency_s)
    return backend


def _dispatcher(wait_for_faster: float) -> tuple[Dispatcher, Backend, Backend, Running]:
    pool = Pool([], PoolSettings())  # never started: no probes, no polls
    slow, fast = _backend("slow", SLOW_S, busy=0), _backend("fast", FAST_S, busy=1)
    pool.backends = {slow.name: slow, fast.name: fast}
    dispatcher = Dispatcher(pool, DispatchSettings(wait_for_faster=wait_for_faster), Limits())
    ours = Running(fast.name, time.monotonic(), 1.0)  # just started on the fast one
    dispatcher._running.add(ours)
    return dispatcher, slow, fast, ours


def _acquire(dispatcher: Dispatcher) -> asyncio.Task[Backend]:
    return asyncio.ensure_future(dispatcher.slots.acquire(set(), Waiting(1.0), None, True, BIG))


async def test_a_big_job_waits_and_takes_the_fast_backend_when_our_job_there_ends() -> None:
    dispatcher, _slow, fast, ours = _dispatcher(wait_for_faster=1.25)
    acquiring = _acquire(dispatcher)
    await asyncio.sleep(0)  # let it look
    assert not acquiring.done()  # the slow one is free, but it holds back
    assert dispatcher.waited_for_faster == 1
    assert [len(queue) for queue in dispatcher.queue.holds.values()] == [1]
    assert fast.name in dispatcher.queue.holds
    fast.in_flight -= 1  # our job on the fast one ends
    dispatcher._running.discard(ours)
    dispatcher.pool.notify()
    assert await asyncio.wait_for(acquiring, 5) is fast
    assert dispatcher.queue.holds == {} and dispatcher.queue.waiting_for_slot == 0


async def test_it_gives_up_waiting_when_waiting_no_longer_pays() -> None:
    # 0.8 s on the slow one against 0.2 s on the fast one: waiting pays while the fast
    # one frees within 0.8 / 1.25 - 0.2 = 0.44 s. Our job there never ends here.
    dispatcher, slow, _fast, _ours = _dispatcher(wait_for_faster=1.25)
    assert await asyncio.wait_for(_acquire(dispatcher), 5) is slow
    assert dispatcher.waited_for_faster == 1


async def test_with_waiting_off_the_big_job_takes_the_free_slow_backend() -> None:
    dispatcher, slow, _fast, _ours = _dispatcher(wait_for_faster=0)
    assert await asyncio.wait_for(_acquire(dispatcher), 5) is slow
    assert dispatcher.waited_for_faster == 0


async def test_with_no_backend_in_rotation_the_job_is_turned_away_at_once() -> None:
    pool = Pool([], PoolSettings())
    down = Backend(BackendSpec.parse("down:1"))
    down.on_failure("probe: connection refused")  # checked, and failed
    pool.backends = {down.name: down}
    dispatcher = Dispatcher(pool, DispatchSettings(queue_timeout_s=600), Limits())
    waiting = Waiting(600.0)
    with pytest.raises(NoCapacity, match="no backend is in rotation"):
        await asyncio.wait_for(dispatcher.slots.acquire(set(), waiting, None, False), 5)
    assert waiting.left_s == 600.0  # nothing was spent waiting


async def test_a_backend_not_yet_checked_is_waited_for() -> None:
    # At start (or after a reload) backends are out of rotation until their first
    # check: a job waits for them within the queue timeout rather than go local.
    pool = Pool([], PoolSettings())
    unknown = Backend(BackendSpec.parse("unknown:1"))
    pool.backends = {unknown.name: unknown}
    dispatcher = Dispatcher(pool, DispatchSettings(), Limits())
    acquiring = asyncio.ensure_future(dispatcher.slots.acquire(set(), Waiting(60), None, False))
    await asyncio.sleep(0)
    assert not acquiring.done()
    unknown.on_report(BackendReport(slots=1, busy=0))
    unknown.on_success()  # its first good probe brings it into rotation
    pool.notify()
    assert await asyncio.wait_for(acquiring, 5) is unknown


async def test_it_does_not_wait_for_a_backend_that_failed_this_job() -> None:
    dispatcher, slow, fast, _ours = _dispatcher(wait_for_faster=1.25)
    acquiring = dispatcher.slots.acquire({fast.name}, Waiting(1.0), None, True, BIG)
    got = await asyncio.wait_for(acquiring, 5)
    assert got is slow
    assert dispatcher.waited_for_faster == 0
