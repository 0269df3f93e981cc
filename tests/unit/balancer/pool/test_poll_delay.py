"""How soon a balancer reads a backend's report again (balancer/pool/pool.py)."""

from __future__ import annotations

from balancer.pool.pool import poll_delay
from balancer.settings import PoolSettings


def test_reports_are_read_at_the_normal_pace_without_demand() -> None:
    settings = PoolSettings(poll_interval_s=0.5, fast_poll_interval_s=0.1)
    assert poll_delay(settings, now=10.0, demand_until=9.0) == 0.5


def test_reports_are_read_fast_while_jobs_wait() -> None:
    settings = PoolSettings(poll_interval_s=0.5, fast_poll_interval_s=0.1)
    assert poll_delay(settings, now=10.0, demand_until=10.5) == 0.1


def test_fast_polling_is_never_slower_than_the_normal_pace() -> None:
    settings = PoolSettings(poll_interval_s=0.05, fast_poll_interval_s=0.1)
    assert poll_delay(settings, now=10.0, demand_until=10.5) == 0.05
