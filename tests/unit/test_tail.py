"""Tail hedging: which running job a faster free backend should back up (balancer/tail.py)."""

from __future__ import annotations

from balancer.backends import Backend, BackendSpec, Report
from balancer.tail import Running, backup_choice, size_factor


def _backend(name: str, latency_s: float, slots: int = 2, busy: int = 0) -> Backend:
    backend = Backend(BackendSpec.parse(f"{name}:1"))
    backend.on_report(Report(slots=slots, busy=0))
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
