"""Hedge decisions (balancer/dispatch/hedge.py), pure, on an injected ``now``: when a
copy counts as late, what a job whose copies run in rotation gets next (a late copy on
the fastest free backend, the tail watcher's backup, or nothing yet)."""

from __future__ import annotations

from dataclasses import dataclass

from balancer.dispatch.hedge import hedge_delay, next_hedge
from balancer.routing.backend import Backend, BackendReport, BackendSpec
from balancer.routing.estimates import Running

NOW = 1000.0


@dataclass
class _Copy:
    running: Running
    late_at: float


def _backend(name: str, free: bool = True) -> Backend:
    backend = Backend(BackendSpec.parse(f"{name}:1"), rise=1)
    backend.on_success()
    backend.on_report(BackendReport(slots=1, busy=0 if free else 1))
    return backend


def _copy(backend: str, late_at: float) -> _Copy:
    return _Copy(Running(backend, NOW - 10, 1.0), late_at)


def test_a_fixed_hedge_delay_wins_else_the_larger_of_the_minimum_and_3_x_p95() -> None:
    backend = _backend("a")
    assert hedge_delay(backend, 2.5, 5.0) == 2.5
    assert hedge_delay(backend, None, 5.0) == 5.0  # (no latency yet)
    for _ in range(20):
        backend.record_latency(4.0)
    assert hedge_delay(backend, None, 5.0) == 12.0


def test_a_job_is_late_only_once_every_copy_is() -> None:
    fastest = _backend("f")
    picks: list[str] = []

    def pick() -> Backend:
        picks.append("asked")
        return fastest

    copies = [_copy("a:1", NOW - 1), _copy("b:1", NOW + 1)]
    assert next_hedge(copies, {}, set(), pick, NOW) == ("", None)
    assert next_hedge(copies, {}, set(), pick, NOW + 1) == ("late", fastest)
    assert picks == ["asked"]  # (the fastest free one is looked for only when late)


def test_a_late_job_with_no_free_backend_waits_for_a_change() -> None:
    copies = [_copy("a:1", NOW - 1)]
    assert next_hedge(copies, {}, set(), lambda: None, NOW) == ("late", None)


def test_the_tail_watchers_backup_goes_to_the_backend_it_chose_once() -> None:
    target = _backend("t")
    copy = _copy("a:1", NOW + 100)
    copy.running.backup_to = target.name
    copy.running.backup.set()

    assert next_hedge([copy], {target.name: target}, set(), lambda: None, NOW) == ("tail", target)
    assert not copy.running.backed_up  # (the request is used up)
    assert next_hedge([copy], {target.name: target}, set(), lambda: None, NOW) == ("", None)


def test_a_tail_backup_to_a_backend_now_full_or_excluded_is_dropped() -> None:
    for target, exclude in ((_backend("t", free=False), set()), (_backend("t"), {"t:1"})):
        copy = _copy("a:1", NOW + 100)
        copy.running.backup_to = target.name
        copy.running.backup.set()
        assert next_hedge([copy], {target.name: target}, exclude, lambda: None, NOW) == ("", None)
        assert not copy.running.backed_up
