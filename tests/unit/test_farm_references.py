"""The farm benchmark's two reference schedulers (bench/farm.py), on loads small enough
to work out by hand: they frame every measured makespan, so they must be right."""

from __future__ import annotations

import pytest

from bench.farm import Farm, Scenario, ideal_earliest_finish, ideal_greedy


def scenario(clients: int, jobs: int, parallel: int) -> Scenario:
    return Scenario(2, 1, clients, jobs, parallel, 0.0, 3, 1.0, 1.0, 10.0, 1)


def test_greedy_takes_the_fastest_free_slot_and_the_oracle_waits_for_it() -> None:
    # Two one-slot servers, speeds 1 and 4; one client asks for two jobs of 4 s at once.
    # Greedy: one on the fast slot (1 s), the other on the slow one (4 s): 4 s.
    # The oracle: the second waits for the fast slot and ends at 1 + 1 = 2 s.
    load = Farm([1.0, 4.0], [], [], [[4.0, 4.0]], [0.0])
    plan = scenario(clients=1, jobs=2, parallel=2)
    greedy_s, bound_s = ideal_greedy(plan, load)
    assert greedy_s == pytest.approx(4.0)
    assert bound_s == pytest.approx(8.0 / 5.0)  # 8 s of work on 5 speed-slots
    assert ideal_earliest_finish(plan, load) == pytest.approx(2.0)


def test_references_respect_each_clients_parallelism_and_start() -> None:
    # At -j1 a client's jobs run one after the other, each on the fast slot: 1 + 1 s;
    # the second client starts 3 s later and does the same. Makespan from the first start.
    load = Farm([1.0, 4.0], [], [], [[4.0, 4.0], [4.0, 4.0]], [0.0, 3.0])
    plan = scenario(clients=2, jobs=2, parallel=1)
    greedy_s, _ = ideal_greedy(plan, load)
    assert greedy_s == pytest.approx(5.0)
    assert ideal_earliest_finish(plan, load) == pytest.approx(5.0)


def test_the_oracle_takes_a_slow_slot_when_that_ends_no_later() -> None:
    # Five jobs of 4 s at once: on the fast slot they would end at 1, 2, 3, 4, 5 s. The
    # oracle puts one on the slow slot (ends at 4 s) and the rest on the fast one: 4 s.
    load = Farm([1.0, 4.0], [], [], [[4.0] * 5], [0.0])
    plan = scenario(clients=1, jobs=5, parallel=5)
    assert ideal_earliest_finish(plan, load) == pytest.approx(4.0)
    greedy_s, _ = ideal_greedy(plan, load)
    assert greedy_s == pytest.approx(4.0)  # slow slot 0-4 s; fast slot 1, 2, 3, 4 s
