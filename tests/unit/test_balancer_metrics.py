"""What the balancer exports beyond its jobs' outcomes: its health probes apart from
its jobs."""

from __future__ import annotations

import pytest

from balancer.attempts import DispatchSettings
from balancer.backends import Backend, BackendSpec
from balancer.dispatch import Dispatcher
from balancer.pool import Pool, PoolSettings
from balancer.stats import BalancerStats
from wire import Limits

pytestmark = pytest.mark.asyncio


def _stats() -> BalancerStats:
    pool = Pool([], PoolSettings())  # never started
    backend = Backend(BackendSpec.parse("h:1"))
    pool.backends = {backend.name: backend}
    return BalancerStats(pool, Dispatcher(pool, DispatchSettings(), Limits()))


async def test_probes_sent_to_a_backend_are_not_jobs_sent() -> None:
    stats = _stats()
    stats.pool.backends["h:1"].probes = 4

    text = stats.prometheus().decode()

    assert 'distlb_backend_probes_total{backend="h:1"} 4.0' in text
    assert 'distlb_backend_sent_total{backend="h:1"} 0.0' in text
