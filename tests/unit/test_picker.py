"""Picking a backend: healthy, free, two random choices (balancer/picker.py)."""

from __future__ import annotations

import random
from collections import Counter

from balancer.backends import Backend, BackendSpec, Report
from balancer.picker import pick


def _backend(name: str, slots: int, *, healthy: bool = True, latency_s: float = 0.1,
             weight: float = 1.0) -> Backend:  # fmt: skip
    backend = Backend(BackendSpec.parse(f"{name}:1,weight={weight}"))
    backend.on_report(Report(slots=slots, busy=0))
    if healthy:
        backend.on_success()
    for _ in range(10):
        backend.record_latency(latency_s)
    return backend


def test_no_candidate_means_none() -> None:
    assert pick([], random.Random(1), 0.0) is None
    down = _backend("a", 4, healthy=False)
    assert pick([down], random.Random(1), 0.0) is None


def test_full_and_down_backends_are_never_picked() -> None:
    full, down, free = _backend("full", 2), _backend("down", 8, healthy=False), _backend("ok", 2)
    full.in_flight = 2
    rng = random.Random(7)
    assert {pick([full, down, free], rng, 0.0).name for _ in range(200)} == {"ok:1"}  # type: ignore[union-attr]


def test_excluded_backends_are_skipped() -> None:
    a, b = _backend("a", 4), _backend("b", 4)
    assert pick([a, b], random.Random(3), 0.0, exclude={"a:1"}) is b


def test_choices_follow_free_slots() -> None:
    big, small = _backend("big", 8), _backend("small", 2)
    rng = random.Random(11)
    counts = Counter(pick([big, small], rng, 0.0).name for _ in range(4000))  # type: ignore[union-attr]
    # Weighted two-choice with the better score kept: the big one wins most picks.
    assert counts["big:1"] > 3 * counts["small:1"] > 0


def test_lower_latency_wins_between_equally_free_backends() -> None:
    fast, slow = _backend("fast", 4, latency_s=0.05), _backend("slow", 4, latency_s=0.5)
    rng = random.Random(5)
    counts = Counter(pick([fast, slow], rng, 0.0).name for _ in range(2000))  # type: ignore[union-attr]
    assert counts["fast:1"] > 2 * counts["slow:1"]


def test_independent_balancers_do_not_all_herd_onto_the_best_backend() -> None:
    # Two equally good backends: picks spread over both rather than one winner.
    a, b = _backend("a", 4), _backend("b", 4)
    rng = random.Random(9)
    counts = Counter(pick([a, b], rng, 0.0).name for _ in range(1000))  # type: ignore[union-attr]
    assert min(counts.values()) > 300
