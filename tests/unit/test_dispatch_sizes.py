"""Which jobs the dispatcher calls big: larger than the median of recent jobs."""

from __future__ import annotations

from balancer.dispatch import MIN_SIZES_FOR_BIG, Dispatcher, DispatchSettings
from balancer.pool import Pool, PoolSettings
from wire import Limits


def _dispatcher() -> Dispatcher:
    return Dispatcher(Pool([], PoolSettings()), DispatchSettings(), Limits())


def test_no_job_is_big_until_enough_sizes_are_known() -> None:
    dispatcher = _dispatcher()
    assert not any(dispatcher.is_big(10**9) for _ in range(MIN_SIZES_FOR_BIG))


def test_jobs_above_the_recent_median_are_big() -> None:
    dispatcher = _dispatcher()
    for size in range(100, 100 + 10 * MIN_SIZES_FOR_BIG, 10):
        dispatcher.is_big(size)
    assert dispatcher.is_big(10_000)
    assert not dispatcher.is_big(100)
    assert not dispatcher.is_big(0)
