"""The roster (balancer/routing/roster.py) keeps, incrementally, what a pick from scratch
(balancer/routing/picker.py) would compute: after any sequence of reports, jobs, probes,
latencies, health changes, turn-aways and time passing, each backend's seconds per
job, pick weight and the fastest free backend are the from-scratch ones."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from balancer.routing.backend import Backend, BackendReport, BackendSpec
from balancer.routing.picker import AffinityRing, affinity_choice, seconds_per_job
from balancer.routing.roster import Roster

COUNT = 6


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _farm(weights: list[float]) -> tuple[Roster, list[Backend], Clock]:
    clock = Clock()
    roster = Roster(clock=clock)
    backends = [Backend(BackendSpec.parse(f"b{i}:1,weight={w}")) for i, w in enumerate(weights)]
    for backend in backends:
        backend.on_change = roster.changed
    roster.rebuild(backends)
    return roster, backends, clock


index = st.integers(0, COUNT - 1)
operation = st.one_of(
    st.tuples(st.just("report"), index, st.integers(1, 8), st.integers(0, 10), st.booleans()),
    st.tuples(st.just("job"), index, st.sampled_from([1, -1])),
    st.tuples(st.just("probe"), index, st.sampled_from([1, -1])),
    st.tuples(st.just("latency"), index, st.floats(0.001, 10.0)),
    st.tuples(st.just("ok"), index),
    st.tuples(st.just("fail"), index),
    st.tuples(st.just("turned_away"), index, st.floats(0.0, 2.0)),
    st.tuples(st.just("time"), st.floats(0.0, 3.0)),
)


def _apply(op: tuple[Any, ...], backends: list[Backend], clock: Clock) -> None:
    # An operation's shape is told by its kind (``operation`` above): Any, not object.
    kind = op[0]
    if kind == "time":
        clock.now += float(op[1])
        return
    backend = backends[int(op[1])]
    if kind == "report":
        backend.on_report(BackendReport(slots=int(op[2]), busy=int(op[3]), accepting=bool(op[4])))
    elif kind == "job":
        backend.in_flight = max(0, backend.in_flight + int(op[2]))
    elif kind == "probe":
        backend.probing = max(0, backend.probing + int(op[2]))
    elif kind == "latency":
        backend.record_latency(float(op[2]))
    elif kind == "ok":
        backend.on_success()
    elif kind == "fail":
        backend.on_failure("test")
    elif kind == "turned_away":
        backend.on_turned_away(clock.now, float(op[2]))


def _check(roster: Roster, backends: list[Backend], clock: Clock) -> None:
    now = clock.now
    fastest = roster.fastest(now)  # also lets the holds that ended expire
    roster.refresh_default(now, force=True)
    fastest = roster.fastest(now)
    cost = seconds_per_job(backends)
    for backend in backends:
        assert roster.cost(backend) == cost[backend.name]
        expected = backend.free / cost[backend.name] if backend.available(now) else 0.0
        assert roster.weight(backend) == expected, backend.name
    total = sum(roster.weight(b) for b in backends)
    assert abs(roster.total_weight - total) <= 1e-9 * max(1.0, total)
    free = [b for b in backends if b.available(now)]
    if not free:
        assert fastest is None
    else:
        best = min((cost[b.name], -b.free, b.name) for b in free)
        assert fastest is not None
        assert (cost[fastest.name], -fastest.free, fastest.name) == best


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([0.5, 1.0, 2.0]), min_size=COUNT, max_size=COUNT),
    st.lists(operation, max_size=60),
)
def test_the_index_equals_the_from_scratch_estimates(
    weights: list[float], ops: list[tuple[Any, ...]]
) -> None:
    roster, backends, clock = _farm(weights)
    for op in ops:
        _apply(op, backends, clock)
        _check(roster, backends, clock)


@settings(max_examples=100, deadline=None)
@given(st.lists(operation, max_size=40), st.integers(0, 2**32 - 1))
def test_a_pick_is_always_an_available_backend_not_excluded(
    ops: list[tuple[Any, ...]], seed: int
) -> None:
    roster, backends, clock = _farm([1.0] * COUNT)
    rng = random.Random(seed)
    for op in ops:
        _apply(op, backends, clock)
        for exclude in (set(), {backends[0].name, backends[1].name}):
            for big in (False, True):
                chosen = roster.pick(rng, clock.now, exclude, big=big)
                free = [b for b in backends if b.available(clock.now) and b.name not in exclude]
                if chosen is None:
                    assert free == []
                else:
                    assert chosen in free


def test_draws_follow_free_slots_over_seconds_per_job() -> None:
    roster, (big, small, slow), _clock = _farm([1.0, 1.0, 1.0])
    for backend, slots, latency in ((big, 8, 0.1), (small, 2, 0.1), (slow, 8, 0.4)):
        backend.on_report(BackendReport(slots=slots, busy=0))
        backend.on_success()
        backend.on_success()
        for _ in range(5):
            backend.record_latency(latency)
    rng = random.Random(3)
    # _draw is None only when no backend has room; here one always has (union-attr).
    counts = Counter(roster._draw(rng).name for _ in range(20000))  # type: ignore[union-attr]
    # Weights 80, 20 and 20: the big fast one four times as often as each other.
    assert 3.6 < counts["b0:1"] / counts["b1:1"] < 4.4
    assert 0.8 < counts["b1:1"] / counts["b2:1"] < 1.25
    big.in_flight = 8  # full: never drawn
    assert "b0:1" not in {roster._draw(rng).name for _ in range(2000)}  # type: ignore[union-attr]


def test_a_hold_that_outlives_a_rebuild_still_ends() -> None:
    roster, backends, clock = _farm([1.0, 1.0])
    for backend in backends:
        backend.on_report(BackendReport(slots=2, busy=0))
        backend.on_success()
        backend.on_success()
    held, other = backends
    held.on_turned_away(clock.now, 1.0)
    roster.rebuild(backends)  # a reload keeps the backend, and its hold
    other.on_failure("x")
    other.on_failure("x")  # out of rotation: only the held one is left
    assert roster.fastest(clock.now) is None
    clock.now += 1.5
    assert roster.fastest(clock.now) is held
    assert roster.pick(random.Random(1), clock.now) is held


caching_operation = st.one_of(
    operation,
    st.tuples(st.just("caching"), index, st.integers(1, 8), st.integers(0, 10), st.booleans()),
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from([0.5, 1.0, 2.0]), min_size=COUNT, max_size=COUNT),
    st.lists(caching_operation, max_size=50),
    st.binary(min_size=1, max_size=8),
)
def test_the_affinity_pick_equals_the_from_scratch_ring(
    weights: list[float], ops: list[tuple[Any, ...]], affinity: bytes
) -> None:
    """The ring, the caching backends and their load kept by the roster give the pick
    that :func:`balancer.routing.picker.affinity_choice` computes from scratch."""
    roster, backends, clock = _farm(weights)
    for i, backend in enumerate(backends):  # all caching and in rotation, loaded unevenly
        backend.on_report(BackendReport(slots=4, busy=i % 4, result_cache=True))
        backend.on_success()
        backend.on_success()
    for op in ops:
        if op[0] == "caching":  # a report from a backend that keeps a result cache
            report = BackendReport(slots=int(op[2]), busy=int(op[3]), result_cache=bool(op[4]))
            backends[int(op[1])].on_report(report)
        else:
            _apply(op, backends, clock)
        now = clock.now
        roster.fastest(now)  # holds that ended expire
        roster.refresh(now)
        for exclude in (set(), {backends[0].name}):

            def usable(b: Backend, exclude: set[str] = exclude, now: float = now) -> bool:
                return b.name not in exclude and b.available(now)

            expected = affinity_choice(backends, usable, affinity, 1.25)
            if expected is None:
                continue  # (the roster then picks as for any job: other tests)
            assert roster.pick(random.Random(1), now, exclude, affinity) is expected


def test_the_ring_shares_jobs_by_speed_and_a_backend_leaving_moves_little_else() -> None:
    rng = random.Random(4)
    cost = {f"b{i}:1": rng.choice([0.5, 1.0, 1.0, 2.0]) for i in range(20)}
    everyone = {name: Backend(BackendSpec.parse(name)) for name in cost}
    for backend in everyone.values():
        backend.on_report(BackendReport(slots=100, busy=0))

    def owner(ring: AffinityRing, job: int) -> str:
        chosen = ring.choose(str(job).encode(), everyone, lambda _: True, 1.0, 1000.0)
        assert chosen is not None
        return chosen.name

    jobs = range(20000)
    ring = AffinityRing.build(cost)
    owners = [owner(ring, job) for job in jobs]
    counts = Counter(owners)
    share = {c: sum(counts[n] for n in cost if cost[n] == c) / sum(1 for n in cost if cost[n] == c)
             for c in (0.5, 1.0, 2.0)}  # fmt: skip
    assert 1.5 < share[0.5] / share[1.0] < 2.6  # twice as fast: about twice the share
    assert 1.5 < share[1.0] / share[2.0] < 2.6
    leaving = "b3:1"
    fewer = AffinityRing.build({n: c for n, c in cost.items() if n != leaving})
    moved = [job for job in jobs if owners[job] != leaving and owner(fewer, job) != owners[job]]
    # Only the speeds' scale moves with the average: a few of the others' jobs move too.
    assert len(moved) < 0.05 * len(jobs), len(moved)
