"""What a server offers by what its machine has free (server/machine.py), on samples
the tests make: foreign demand beyond the slack takes slots away, available memory caps
new jobs at one per --memory-per-job-mb, memory pressure stops new jobs; off, every slot
is offered; and the sampler reads this machine's /proc."""

from __future__ import annotations

import os
import subprocess
import sys

from server.machine import MachineLoad, MachineSample, OfferRules, read_sample
from server.slots import Slots


def _sample(
    runnable: int = 0, own: int = 0, mem_mb: int | None = 16000, pressure: float | None = 0.0
) -> MachineSample:
    return MachineSample(runnable, own, mem_mb, pressure, 0.0)


def test_foreign_demand_beyond_the_slack_takes_slots_away() -> None:
    rules = OfferRules(foreign_load_slack=0.5)
    machine = MachineLoad(cpus=8)
    machine.update(_sample(runnable=3, own=3), 1.0)  # all runnable tasks are our jobs
    assert machine.offered(8, 3, rules) == 8
    machine = MachineLoad(cpus=8)
    machine.update(_sample(runnable=5, own=2), 1.0)  # 3 foreign, smoothed from 0 ...
    assert 0.0 < machine.foreign < 3.0 and machine.offered(8, 2, rules) == 7
    for _ in range(30):
        machine.update(_sample(runnable=5, own=2), 1.0)
    assert machine.offered(8, 2, rules) == 5  # ... to 3: 3 - 0.5 -> 3 slots off
    for _ in range(30):
        machine.update(_sample(runnable=20, own=0), 1.0)
    assert machine.offered(8, 0, rules) == 0  # a machine full of other work offers none
    for _ in range(30):
        machine.update(_sample(runnable=0, own=0), 1.0)
    assert machine.offered(8, 0, rules) == 8  # and all again once it is gone
    assert machine.offered(8, 0, OfferRules(enabled=False)) == 8


def test_available_memory_and_pressure_cap_new_jobs() -> None:
    rules = OfferRules(memory_per_job_mb=1000, memory_pressure_limit=10.0)
    machine = MachineLoad(cpus=8)
    machine.update(_sample(mem_mb=2500), 1.0)
    assert machine.offered(8, 3, rules) == 5  # 3 running + 2 more fit in 2.5 GB
    assert not machine.memory_short(rules)
    machine.update(_sample(mem_mb=900), 1.0)
    assert machine.offered(8, 3, rules) == 3 and machine.memory_short(rules)
    machine.update(_sample(mem_mb=8000, pressure=25.0), 1.0)
    assert machine.offered(8, 2, rules) == 2  # under pressure: no new job
    off = OfferRules(enabled=False, memory_per_job_mb=1000)
    machine.update(_sample(mem_mb=10), 1.0)
    assert machine.offered(8, 0, off) == 8 and not machine.memory_short(off)
    assert not machine.memory_short(OfferRules(memory_per_job_mb=0))


def test_slots_take_jobs_only_within_what_is_offered_and_while_not_refusing() -> None:
    slots = Slots(4)
    changes: list[int] = []
    slots.on_change = lambda: changes.append(slots.offered)
    slots.offered = 2
    assert changes == [2] and slots.free == 2
    assert slots.try_acquire("a") and slots.try_acquire("b") and not slots.try_acquire("c")
    slots.offered = 1
    assert slots.free == 0 and slots.busy == 2  # (running jobs keep their slots)
    slots.offered = 9
    assert slots.offered == 4  # (never more than configured)
    slots.refusing = "short of memory"
    assert slots.free == 2 and not slots.try_acquire("c")
    slots.refusing = None
    assert slots.try_acquire("c")
    slots.offered = 0
    assert not slots.try_acquire("d")
    assert slots.try_acquire("probe", probe=True)  # a probe: any configured slot free
    assert not slots.try_acquire("probe", probe=True)  # (all 4 busy now)


def test_the_sampler_counts_the_servers_own_runnable_tasks_apart() -> None:
    # Two busy children of this process are its own, one with a busy second thread (a
    # job's threads are its own too); the machine sees them all.
    code = (
        "import threading, time\nend = time.monotonic() + 30\n"
        "def spin():\n    while time.monotonic() < end: pass\n"
        "threading.Thread(target=spin).start()\nprint('spinning', flush=True)\nspin()\n"
    )
    children = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE) for _ in range(2)
    ]
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline() == b"spinning\n"
        samples = [read_sample(os.getpid()) for _ in range(20)]
    finally:
        for child in children:
            child.kill()
            child.wait()
    assert max(s.own_runnable for s in samples) >= 3  # (4 spinning threads, 2 cores)
    assert max(s.runnable for s in samples) >= 1
    assert all(s.mem_available_mb is None or s.mem_available_mb > 0 for s in samples)
