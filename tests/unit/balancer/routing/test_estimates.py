"""Tail hedging: which running job a faster free backend should back up
(balancer/routing/estimates.py)."""

from __future__ import annotations

import pytest

from balancer.routing.backend import Backend, BackendReport, BackendSpec
from balancer.routing.estimates import Running, backup_choice, size_factor, wait_choice


def _backend(name: str, latency_s: float, slots: int = 2, busy: int = 0) -> Backend:
    backend = Backend(BackendSpec.parse(f"{name}:1"))
    backend.on_report(BackendReport(slots=slots, busy=0))
    backend.on_success()
    backend.in_flight = busy
    for _ in range(10):
        backend.record_latency(latency_s)
    return backend


def _job(backend: str, started: float = 0.0, size: float = 1.0) -> Running:
    return Running(backend, started, size)


def test_a_job_on_a_slow_backend_moves_to_a_much_faster_free_one() -> None:
    slow, fast = _backend("slow", 4.0, busy=2), _backend("fast", 1.0)
    job = _job("slow:1")
    assert backup_choice([job], [slow, fast], now=0.5, speedup=2.0) == (job, fast)


def test_nothing_moves_without_a_free_backend_or_with_hedging_off() -> None:
    slow, fast = _backend("slow", 4.0, busy=2), _backend("fast", 1.0, busy=2)
    assert backup_choice([_job("slow:1")], [slow, fast], now=0.5, speedup=2.0) is None
    fast.in_flight = 0
    assert backup_choice([_job("slow:1")], [slow, fast], now=0.5, speedup=0) is None


def test_a_backend_not_fast_enough_gets_no_backup() -> None:
    slow, fast = _backend("slow", 1.5, busy=2), _backend("fast", 1.0)
    assert backup_choice([_job("slow:1")], [slow, fast], now=0.0, speedup=2.0) is None


def test_a_job_almost_done_stays_where_it_is() -> None:
    slow, fast = _backend("slow", 4.0, busy=2), _backend("fast", 1.0)
    # 3.5 of its 4 s are over: under a second left beats a second on the fast one.
    assert backup_choice([_job("slow:1")], [slow, fast], now=3.5, speedup=2.0) is None


def test_the_job_that_gains_most_goes_first_and_never_twice() -> None:
    slow, fast = _backend("slow", 4.0, slots=4, busy=3), _backend("fast", 1.0)
    young, old, big = _job("slow:1", 1.0), _job("slow:1", 0.0), _job("slow:1", 1.0, size=2.0)
    assert backup_choice([old, young, big], [slow, fast], now=1.5, speedup=2.0) == (big, fast)
    big.backup.set()
    assert backup_choice([old, young, big], [slow, fast], now=1.5, speedup=2.0) == (young, fast)


def test_jobs_already_on_the_fastest_free_backend_stay() -> None:
    fast = _backend("fast", 1.0, slots=4, busy=1)
    slow = _backend("slow", 4.0, busy=2)
    assert backup_choice([_job("fast:1")], [slow, fast], now=0.1, speedup=2.0) is None


def test_a_job_far_past_its_estimate_is_backed_up() -> None:
    slow, fast = _backend("slow", 1.0, busy=2), _backend("fast", 0.25)
    job = _job("slow:1")
    assert backup_choice([job], [slow, fast], now=1.5, speedup=2.0) is None
    assert backup_choice([job], [slow, fast], now=2.5, speedup=2.0) == (job, fast)


def test_size_factor_is_relative_and_clamped() -> None:
    assert size_factor(500, None) == 1.0
    assert size_factor(500, 1000) == 0.5
    assert size_factor(1, 1000) == 0.25
    assert size_factor(10**9, 1000) == 4.0


# --- waiting for a faster backend ------------------------------------------------


def test_a_big_job_waits_for_our_job_ending_on_a_much_faster_backend() -> None:
    slow, fast = _backend("slow", 4.0), _backend("fast", 1.0, busy=2)
    ending, young = _job("fast:1", started=0.0), _job("fast:1", started=0.8)
    # At 0.9 s the older fast job is expected to end in 0.225 s (a quarter of the 0.9 s it
    # ran: it is near its 1 s estimate): 0.225 + 2 s there beats 8 s on the slow one.
    found = wait_choice(slow, [slow, fast], [ending, young], {}, 0.9, size_factor=2.0, gain=1.25)
    assert found is not None
    backend, wait, worth = found
    assert backend is fast
    assert wait == pytest.approx(0.225)
    assert worth == pytest.approx(8.0 / 1.25 - 2.0)


def test_jobs_already_waiting_get_the_first_frees() -> None:
    slow, fast = _backend("slow", 4.0), _backend("fast", 1.0, busy=2)
    running = [_job("fast:1", started=0.0), _job("fast:1", started=0.5)]
    first = wait_choice(slow, [slow, fast], running, {}, now=0.9, size_factor=1.0, gain=1.25)
    second = wait_choice(slow, [slow, fast], running, {"fast:1": 1}, 0.9, 1.0, 1.25)
    assert first is not None and second is not None
    assert second[1] > first[1]  # it waits for the later of the two ends
    # With both ends taken by jobs waiting already, there is nothing left to wait for.
    assert wait_choice(slow, [slow, fast], running, {"fast:1": 2}, 0.9, 1.0, 1.25) is None


def test_no_wait_when_it_gains_too_little_or_is_off() -> None:
    medium, fast = _backend("medium", 1.2), _backend("fast", 1.0, busy=2)
    running = [_job("fast:1", started=0.0)]
    # 1.2 s here against 0.25 + 1 s after waiting: no gain.
    assert wait_choice(medium, [medium, fast], running, {}, 1.0, 1.0, 1.25) is None
    slow = _backend("slow", 4.0)
    assert wait_choice(slow, [slow, fast], running, {}, 1.0, 1.0, gain=0) is None


def test_no_wait_for_a_backend_we_have_no_job_on_or_that_is_not_faster() -> None:
    # Full, but with another balancer's jobs: when they end is unknown.
    slow, fast = _backend("slow", 4.0), _backend("fast", 1.0, busy=0)
    fast.on_report(BackendReport(slots=2, busy=2))
    assert wait_choice(slow, [slow, fast], [], {}, 1.0, 1.0, 1.25) is None
    # Our job on a slower backend is no reason to wait.
    slower = _backend("slower", 8.0, busy=2)
    assert wait_choice(slow, [slow, slower], [_job("slower:1")], {}, 7.9, 1.0, 1.25) is None


def test_no_wait_for_a_backend_out_of_rotation() -> None:
    slow, fast = _backend("slow", 4.0), _backend("fast", 1.0, busy=2)
    fast.healthy = False
    assert wait_choice(slow, [slow, fast], [_job("fast:1")], {}, 0.9, 1.0, 1.25) is None
