"""What a health check's result does (balancer/pool/health.py ``mark``), against a pool
stand-in through the ``Watched`` protocol the checks see the pool by: HAProxy's rise and
fall, and who is told when a backend leaves or rejoins rotation."""

from __future__ import annotations

import asyncio

from balancer.pool.health import Watched, mark
from balancer.routing.backend import Backend, BackendSpec
from balancer.routing.compilers import CompilerRouting
from balancer.settings import PoolSettings
from daemon.changes import Changes


class WatchedForTests:
    """The pool as the checks see it, writing down what they tell it."""

    def __init__(self) -> None:
        self.settings = PoolSettings(rise=2, fall=2)
        self.routing = CompilerRouting()
        self.demand_began = Changes()
        self.told: list[tuple[str, str, str]] = []
        self.down: list[str] = []
        self.notified = 0

    @property
    def demand_until(self) -> float:
        return 0.0

    def notify(self) -> None:
        self.notified += 1

    def tell_state(self, backend: str, state: str, reason: str) -> None:
        self.told.append((backend, state, reason))

    def went_down(self, backend: Backend) -> None:
        self.down.append(backend.name)

    def stale_future(self, backend: Backend) -> asyncio.Future[None]:
        raise AssertionError("not used by mark")

    def report_stale(self, backend: Backend) -> None:
        raise AssertionError("not used by mark")

    def idle_poll_waker(self, backend: Backend) -> asyncio.Future[None]:
        raise AssertionError("not used by mark")

    def idle_poll_over(self, backend: Backend) -> None:
        raise AssertionError("not used by mark")


def _pool() -> WatchedForTests:
    pool = WatchedForTests()
    _: Watched = pool  # (mypy: the stand-in is what the checks need)
    return pool


def test_rise_good_checks_bring_a_backend_in_and_the_pool_hears_it_once() -> None:
    pool, backend = _pool(), Backend(BackendSpec.parse("a:1"), rise=2, fall=2)
    backend.consecutive_ok = 0  # (a backend that failed before: it needs both)

    mark(pool, backend, True)
    assert not backend.healthy and pool.told == []
    mark(pool, backend, True)
    mark(pool, backend, True)

    assert backend.healthy
    assert pool.told == [("a:1", "up", "probes ok")] and pool.notified == 1


def test_fall_failures_take_it_out_tell_the_pool_and_rescue_its_jobs_once() -> None:
    pool, backend = _pool(), Backend(BackendSpec.parse("a:1"), rise=1, fall=2)
    mark(pool, backend, True)
    pool.told.clear()

    mark(pool, backend, False, "probe: refused")
    assert backend.healthy and pool.down == []  # (one failure is not a fall)
    mark(pool, backend, False, "probe: refused")
    mark(pool, backend, False, "probe: refused")

    assert not backend.healthy and backend.last_error == "probe: refused"
    assert pool.told == [("a:1", "down", "probe: refused")]
    assert pool.down == ["a:1"]


def test_a_good_check_between_failures_starts_the_fall_again() -> None:
    pool, backend = _pool(), Backend(BackendSpec.parse("a:1"), rise=1, fall=2)
    mark(pool, backend, True)

    for ok in (False, True, False, True, False):
        mark(pool, backend, ok, "" if ok else "probe: timeout")

    assert backend.healthy and pool.down == []
