"""Picking a backend: healthy, free, two random choices (balancer/routing/picker.py)."""

from __future__ import annotations

import random
from collections import Counter

from balancer.routing.backend import Backend, BackendReport, BackendSpec
from balancer.routing.picker import pick

# pick() is None only when no backend can take the job; each pick below has one to
# choose, hence the ``type: ignore[union-attr]`` where its name is read.


def _backend(name: str, slots: int, *, healthy: bool = True, latency_s: float = 0.1,
             weight: float = 1.0) -> Backend:  # fmt: skip
    backend = Backend(BackendSpec.parse(f"{name}:1,weight={weight}"))
    backend.on_report(BackendReport(slots=slots, busy=0))
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


def test_big_jobs_go_to_the_fastest_free_backend() -> None:
    fast, mid, slow = (_backend("fast", 4, latency_s=0.1), _backend("mid", 8, latency_s=0.2),
                       _backend("slow", 8, latency_s=0.4))  # fmt: skip
    rng = random.Random(4)
    assert {pick([slow, mid, fast], rng, 0.0, big=True).name for _ in range(50)} == {"fast:1"}  # type: ignore[union-attr]
    fast.in_flight = 4  # full: the next fastest takes it
    assert pick([slow, mid, fast], rng, 0.0, big=True) is mid


def test_small_jobs_prefer_fast_backends_but_use_every_one() -> None:
    fast, slow = _backend("fast", 4, latency_s=0.1), _backend("slow", 4, latency_s=0.4)
    rng = random.Random(6)
    counts = Counter(pick([fast, slow], rng, 0.0).name for _ in range(4000))  # type: ignore[union-attr]
    assert counts["fast:1"] > 4 * counts["slow:1"] > 0


def _caching(backend: Backend) -> Backend:
    assert backend.report is not None
    backend.report.result_cache = True
    return backend


def test_repeats_of_a_job_go_to_the_same_caching_backend() -> None:
    backends = [_caching(_backend(name, 4)) for name in "abcdef"]
    rng = random.Random(2)
    for job in (b"job-1", b"job-2", b"job-3"):
        chosen = {pick(backends, rng, 0.0, affinity=job).name for _ in range(20)}  # type: ignore[union-attr]
        assert len(chosen) == 1, chosen
    owners = {pick(backends, rng, 0.0, affinity=str(i).encode()).name for i in range(200)}  # type: ignore[union-attr]
    assert len(owners) == len(backends)  # jobs spread over all of them


def test_affinity_only_counts_backends_that_keep_a_cache() -> None:
    caching = _caching(_backend("cache", 4, latency_s=0.4))
    plain = _backend("plain", 4, latency_s=0.1)
    rng = random.Random(8)
    assert {pick([plain, caching], rng, 0.0, affinity=b"x").name for _ in range(30)} == {"cache:1"}  # type: ignore[union-attr]
    # Without a caching backend the affinity is no reason to leave the fast one.
    plain2 = _backend("plain2", 4, latency_s=0.4)
    counts = Counter(pick([plain, plain2], rng, 0.0, affinity=b"x").name for _ in range(1000))  # type: ignore[union-attr]
    assert counts["plain:1"] > 4 * counts["plain2:1"]


def test_affinity_gives_way_when_its_backend_is_loaded_beyond_the_bound() -> None:
    backends = [_caching(_backend(name, 4)) for name in "abcd"]
    rng = random.Random(3)
    owner = pick(backends, rng, 0.0, affinity=b"job")
    assert owner is not None
    owner.in_flight = 3  # 3 of 4 busy while the others are idle: far above average
    assert pick(backends, rng, 0.0, affinity=b"job") is not owner
