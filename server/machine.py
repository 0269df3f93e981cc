"""What the machine really has free: the slots a server offers while other work runs on
its machine or memory runs short (issue 30).

A farm's servers are often developers' workstations or shared build hosts, where a
foreign ``make -j32`` makes a "free" slot a slow one, and a machine short of memory a
failing one. Every ``--load-interval`` the server samples:

- **foreign CPU demand**: the machine's runnable tasks (``/proc/loadavg``'s fourth field,
  taken as it is at that moment) less the runnable threads of the server's own process
  tree (the server's threads and its jobs', every process below it, found through each
  thread's ``children`` in ``/proc``: the cost follows the tree, not the machine),
  smoothed over a few seconds (an exponential average, time constant
  :data:`SMOOTHING_S`, from 0 at the start: the server's own start-up is not foreign).
  The sampling thread is runnable in both counts, and cancels out. Demand, not CPU use: a
  machine whose two cores run 32 foreign compiles is far busier than "two CPUs". (PSI
  cannot tell the server's own jobs from others': its CPU figure is reported, not used.)
- **available memory** (``MemAvailable``) and **memory pressure** (PSI
  ``/proc/pressure/memory``, "full" over 10 s, where the kernel has it).

The slots offered are the configured ones, less one per foreign CPU's worth of demand
beyond ``--foreign-load-slack``; and no more than the jobs running plus one per
``--memory-per-job-mb`` of available memory; and no more than the jobs running while
memory pressure is at or above ``--memory-pressure-limit``. A job that arrives while
less than ``--memory-per-job-mb`` is available is turned away (busy: its balancer sends
it elsewhere, the client compiles it itself), never started to be killed by the kernel.
With ``--offer-by-load off``, every configured slot is offered whatever the machine does.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass

SMOOTHING_S = 3.0
"""The foreign demand's exponential average's time constant."""


@dataclass(frozen=True)
class MachineSample:
    runnable: int
    """Tasks runnable on the machine now (``/proc/loadavg``)."""
    own_runnable: int
    """Of those, the server's own threads and its jobs' (the sampler's thread too)."""
    mem_available_mb: int | None
    memory_pressure: float | None
    """PSI memory "full" avg10, in percent (None: no PSI)."""
    cpu_pressure: float | None
    """PSI cpu "some" avg10, in percent (None: no PSI)."""


@dataclass
class OfferRules:
    enabled: bool = True
    foreign_load_slack: float = 0.5
    memory_per_job_mb: int = 256
    memory_pressure_limit: float = 10.0


@dataclass
class MachineLoad:
    """The machine's state as the server last sampled it, and the slots it offers."""

    cpus: int = os.cpu_count() or 1
    foreign: float = 0.0
    """Foreign CPU demand, smoothed (runnable tasks not the server's)."""
    sample: MachineSample | None = None

    def update(self, sample: MachineSample, interval_s: float) -> None:
        """Fold a new sample into the smoothed demand."""
        foreign_now = max(0, sample.runnable - sample.own_runnable)
        alpha = 1.0 - math.exp(-interval_s / SMOOTHING_S)
        self.foreign += alpha * (foreign_now - self.foreign)
        self.sample = sample

    def offered(self, slots: int, busy: int, rules: OfferRules) -> int:
        """The slots to offer of ``slots`` configured, ``busy`` of them busy."""
        if not rules.enabled or self.sample is None:
            return slots
        offered = slots - max(0, math.ceil(self.foreign - rules.foreign_load_slack - 1e-9))
        sample = self.sample
        if sample.mem_available_mb is not None and rules.memory_per_job_mb > 0:
            offered = min(offered, busy + sample.mem_available_mb // rules.memory_per_job_mb)
        if sample.memory_pressure is not None and sample.memory_pressure >= (
            rules.memory_pressure_limit
        ):
            offered = min(offered, busy)
        return max(0, min(slots, offered))

    def memory_short(self, rules: OfferRules) -> bool:
        """Less memory is available than a new job may need: turn it away."""
        sample = self.sample
        return (
            rules.enabled
            and rules.memory_per_job_mb > 0
            and sample is not None
            and sample.mem_available_mb is not None
            and sample.mem_available_mb < rules.memory_per_job_mb
        )

    def describe(self) -> dict[str, object]:
        """For /status and the dashboard."""
        sample = self.sample
        return {
            "cpus": self.cpus,
            "foreign_load": round(self.foreign, 2),
            "mem_available_mb": sample.mem_available_mb if sample else None,
            "memory_pressure": sample.memory_pressure if sample else None,
            "cpu_pressure": sample.cpu_pressure if sample else None,
        }


def read_sample(root_pid: int) -> MachineSample:
    """The machine now: ``/proc/loadavg``, then the server's tree (its threads and its
    jobs' processes, through ``/proc``: about a millisecond for a full server)."""
    runnable = _runnable()
    own = _own_runnable(root_pid)
    return MachineSample(
        runnable=runnable,
        own_runnable=own,
        mem_available_mb=mem_available_mb(),
        memory_pressure=_psi("memory", "full"),
        cpu_pressure=_psi("cpu", "some"),
    )


def _runnable() -> int:
    try:
        with open("/proc/loadavg", encoding="ascii") as fh:
            return int(fh.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return 0


MAX_TREE = 65536
"""Processes of the server's tree looked at, at most (a job may start 64)."""


def _own_runnable(root_pid: int) -> int:
    """Runnable threads of ``root_pid`` and of every process below it (each thread's
    ``children`` names the processes it started)."""
    count, todo, seen = 0, [root_pid], set[int]()
    while todo and len(seen) < MAX_TREE:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue  # (gone)
        for tid in tasks:
            with contextlib.suppress(OSError, ValueError, IndexError):
                with open(f"/proc/{pid}/task/{tid}/stat", "rb") as fh:
                    raw = fh.read()
                if raw[raw.rindex(b")") + 2 :].split()[0] == b"R":
                    count += 1
                with open(f"/proc/{pid}/task/{tid}/children", "rb") as fh:
                    todo.extend(int(child) for child in fh.read().split())
    return count


def mem_available_mb() -> int | None:
    """The machine's ``MemAvailable`` in MB (None: unreadable)."""
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    return None


def _psi(resource: str, kind: str) -> float | None:
    with (
        contextlib.suppress(OSError, ValueError, IndexError),
        open(f"/proc/pressure/{resource}") as fh,
    ):
        for line in fh:
            if line.startswith(kind + " "):
                return float(line.split()[1].partition("=")[2])
    return None
