"""The dispatcher owns the queue of jobs that wait for a slot; every change the pool
tells of wakes them, longest waiting first (balancer/dispatch/dispatcher.py), so a job
that a full backend turned away, and that waits again, keeps its place."""

from __future__ import annotations

import asyncio

import pytest

from balancer.dispatch.dispatcher import Dispatcher
from balancer.pool.pool import Pool
from balancer.settings import DispatchSettings, PoolSettings
from wire import Limits

pytestmark = pytest.mark.asyncio


async def test_a_change_of_the_pool_wakes_the_longest_waiting_first() -> None:
    pool = Pool([], PoolSettings())
    queue = Dispatcher(pool, DispatchSettings(), Limits()).queue
    woken: list[str] = []

    async def wait(name: str, since: float) -> None:
        await queue.wait(60, since)
        woken.append(name)

    tasks = [
        asyncio.ensure_future(wait(name, since))
        for name, since in (("newer", 2.0), ("oldest", 1.0), ("newest", 3.0), ("tie", 2.0))
    ]
    await asyncio.sleep(0)  # every one registered
    pool.notify()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert woken == ["oldest", "newer", "tie", "newest"]  # a tie: who asked first


async def test_a_waiter_that_timed_out_or_was_cancelled_is_forgotten() -> None:
    pool = Pool([], PoolSettings())
    queue = Dispatcher(pool, DispatchSettings(), Limits()).queue
    await queue.wait(0.0)  # times out at once
    cancelled = asyncio.ensure_future(queue.wait(60))
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert queue._waiters == {}
    pool.notify()  # nothing left to wake, nothing raised
