"""Jobs waiting for a slot are woken longest-waiting first (balancer/pool/pool.py), so a job
that a full backend turned away, and that waits again, keeps its place in the queue."""

from __future__ import annotations

import asyncio

import pytest

from balancer.pool.pool import Pool
from balancer.settings import PoolSettings

pytestmark = pytest.mark.asyncio


async def test_the_longest_waiting_are_woken_first() -> None:
    pool = Pool([], PoolSettings())
    woken: list[str] = []

    async def wait(name: str, since: float) -> None:
        await pool.wait_for_change(60, since)
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
    await pool.wait_for_change(0.0)  # times out at once
    cancelled = asyncio.ensure_future(pool.wait_for_change(60))
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert pool.queue._waiters == {}
    pool.notify()  # nothing left to wake, nothing raised
