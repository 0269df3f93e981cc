"""What the balancer exports beyond its jobs' outcomes: the jobs accepted, its health
probes apart from its jobs, its build and how its config's last load went."""

from __future__ import annotations

import pytest

from balancer.dispatch.dispatcher import Dispatcher
from balancer.observe.stats import BalancerStats
from balancer.pool.pool import Pool
from balancer.routing.backend import Backend, BackendSpec
from balancer.settings import DispatchSettings, PoolSettings
from wire import Limits

pytestmark = pytest.mark.asyncio


def _stats() -> BalancerStats:
    pool = Pool([], PoolSettings())  # never started
    backend = Backend(BackendSpec.parse("h:1"))
    pool.backends = {backend.name: backend}
    return BalancerStats(pool, Dispatcher(pool, DispatchSettings(), Limits()))


async def test_jobs_accepted_are_counted_apart_from_how_jobs_ended() -> None:
    stats = _stats()
    stats.counters.accepted = 3
    stats.job_finished("ok", 0.1)
    stats.job_finished("failed", 0.1)

    text = stats.prometheus().decode()

    assert 'outcome="accepted"' not in text
    assert "distlb_balancer_jobs_accepted_total 3.0" in text
    assert 'distlb_balancer_jobs_total{outcome="ok"} 1.0' in text
    assert stats.status()["totals"]["accepted"] == 3  # type: ignore[index]


async def test_probes_sent_to_a_backend_are_not_jobs_sent() -> None:
    stats = _stats()
    stats.pool.backends["h:1"].probes = 4

    text = stats.prometheus().decode()

    assert 'distlb_backend_probes_total{backend="h:1"} 4.0' in text
    assert 'distlb_backend_sent_total{backend="h:1"} 0.0' in text


async def test_build_info_and_reload_status_as_the_server_has_them() -> None:
    stats = _stats()
    stats.version = "1.2.3"

    stats.reload_failed("--backend 'x': expected HOST:PORT")

    text = stats.prometheus().decode()
    assert 'distlb_build_info{role="balancer",version="1.2.3"} 1.0' in text
    assert "distlb_config_last_reload_successful 0.0" in text
    assert "distlb_config_last_reload_success_timestamp_seconds" in text
    status = stats.status()
    assert status["version"] == "1.2.3"
    assert status["reload"] == stats.reload.status()
    assert stats.reload.reason == "--backend 'x': expected HOST:PORT"
