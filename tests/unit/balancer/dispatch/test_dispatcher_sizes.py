"""Which jobs the dispatcher calls big (larger than the median of recent jobs), and how
much larger."""

from __future__ import annotations

from balancer.dispatch.dispatcher import Dispatcher
from balancer.pool.pool import Pool
from balancer.routing.estimates import MIN_SIZES_FOR_BIG
from balancer.settings import DispatchSettings, PoolSettings
from wire import Limits


def _dispatcher() -> Dispatcher:
    return Dispatcher(Pool([], PoolSettings()), DispatchSettings(), Limits())


def test_no_job_is_big_until_enough_sizes_are_known() -> None:
    dispatcher = _dispatcher()
    assert not any(dispatcher.size_hints(10**9)[0] for _ in range(MIN_SIZES_FOR_BIG))


def test_jobs_above_the_recent_median_are_big() -> None:
    dispatcher = _dispatcher()
    for size in range(100, 100 + 10 * MIN_SIZES_FOR_BIG, 10):
        dispatcher.size_hints(size)
    assert dispatcher.size_hints(10_000) == (True, 4.0)  # the factor is clamped
    assert dispatcher.size_hints(100)[0] is False
    assert dispatcher.size_hints(0)[0] is False


def test_the_size_factor_is_against_the_median_of_recent_jobs() -> None:
    dispatcher = _dispatcher()
    for _ in range(MIN_SIZES_FOR_BIG):
        dispatcher.size_hints(1000)
    assert dispatcher.size_hints(500) == (False, 0.5)
    assert dispatcher.size_hints(2000) == (True, 2.0)
