"""Tail hedging and waiting for a faster backend (pure): when the farm has room to
spare, back up the job that a faster free backend would most likely finish much sooner;
and before a big job starts on a slow free backend, ask whether it would finish sooner
after waiting for one of our jobs on a faster backend to end.

At the end of a build the farm empties while the last jobs still run wherever they
were started, often on the slowest servers, which were the ones free at the time.
A store-and-forward balancer still holds each request, so it can send such a job to
a fast backend that has gone idle, take the first reply and cancel the other (what
MapReduce calls backup tasks). HAProxy cannot: it has forwarded the bytes.

The estimate: a job's cost on a backend is that backend's seconds per job times the
job's size relative to the median recent job (clamped), so a job that has run for
``elapsed`` seconds has about ``cost - elapsed`` left where it is, but never less
than a quarter of ``elapsed``: a job that overruns its estimate (a loaded server, a
job bigger than its size says) has shown that the estimate was too low.

Waiting is what an earliest-finish-time scheduler does: a 6 s job should not take the
last free slot of a server four times slower when a fast server's slot comes free in
a second. Each backend's next frees are the ends of our own jobs there, in order; jobs
already waiting for that backend have the earlier ones. Another balancer's jobs are not
counted (we do not know when they end), so we only ever wait for our own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from balancer.routing.backend import Backend
from balancer.routing.picker import seconds_per_job
from balancer.routing.window import SortedWindow

SIZE_FACTOR_RANGE = (0.25, 4.0)
"""How far a job's size may stretch or shrink its expected cost."""
LATE_SHARE = 0.25
"""Least time left of a running job, as a share of the time it has run so far."""


@dataclass(eq=False)
class Running:
    """A job at a backend whose reply we await, and whether it may still be backed up."""

    backend: str
    started: float
    size_factor: float
    """The job's source size over the median recent job's, clamped to SIZE_FACTOR_RANGE."""
    backup: asyncio.Event = field(default_factory=asyncio.Event)
    backup_to: str = ""

    @property
    def backed_up(self) -> bool:
        return self.backup.is_set()


def size_factor(source_bytes: int, median_bytes: float | None) -> float:
    if not median_bytes:
        return 1.0
    low, high = SIZE_FACTOR_RANGE
    return min(high, max(low, source_bytes / median_bytes))


def remaining_s(job: Running, cost: Mapping[str, float], now: float) -> float:
    """Expected seconds left of a running job where it runs."""
    elapsed = now - job.started
    return max(cost[job.backend] * job.size_factor - elapsed, LATE_SHARE * elapsed)


def wait_choice(
    chosen: Backend,
    backends: Sequence[Backend],
    running: Iterable[Running],
    waiting_for: dict[str, int],
    now: float,
    size_factor: float,
    gain: float,
    cost: Mapping[str, float] | None = None,
) -> tuple[Backend, float, float] | None:
    """A full backend faster than ``chosen`` where a job of ``size_factor``, waiting for
    one of our jobs there to end, is expected to finish ``gain`` times sooner than on
    ``chosen`` now; with the expected wait and the longest wait that would still gain
    that much. None: take ``chosen``.

    ``waiting_for`` counts, per backend, the jobs already waiting for it: they get its
    first frees, so this one would wait for the next. Only backends that run one of
    our jobs can be waited for, so ``backends`` need hold no others. ``cost``: seconds
    per job, when the caller keeps them (default: computed over ``backends``).
    """
    if gain <= 0 or not chosen.healthy:
        return None
    healthy = [b for b in backends if b.healthy]
    if cost is None:
        cost = seconds_per_job([*healthy, *([] if chosen in healthy else [chosen])])
    here = cost[chosen.name] * size_factor
    ends: dict[str, list[float]] = {}
    for job in running:
        if job.backend in cost:
            ends.setdefault(job.backend, []).append(remaining_s(job, cost, now))
    best: tuple[float, Backend, float, float] | None = None
    for backend in healthy:
        queue = sorted(ends.get(backend.name, ()))
        ahead = waiting_for.get(backend.name, 0)
        if cost[backend.name] >= cost[chosen.name] or backend.available(now) or ahead >= len(queue):
            continue
        wait = queue[ahead]
        there = cost[backend.name] * size_factor
        if gain * (wait + there) <= here and (best is None or wait + there < best[0]):
            best = (wait + there, backend, wait, here / gain - there)
    return best[1:] if best else None


def backup_choice(
    running: Iterable[Running],
    backends: Sequence[Backend],
    now: float,
    speedup: float,
    cost: Mapping[str, float] | None = None,
    fastest: Backend | None = None,
) -> tuple[Running, Backend] | None:
    """The job to back up and where, or None.

    Only the fastest backend with a free slot is considered, and only for a job that
    it would finish ``speedup`` times sooner than the job's expected remaining time
    where it runs; among those, the one that gains most. Jobs already backed up, and
    jobs on that same backend, are skipped. A caller that keeps seconds per job and
    knows the fastest free backend passes ``cost`` and ``fastest`` (``backends`` is
    then not read).
    """
    if speedup <= 0:
        return None
    if fastest is None or cost is None:
        free = [b for b in backends if b.available(now)]
        if not free:
            return None
        cost = seconds_per_job([*backends])
        fastest = min(free, key=lambda b: (cost[b.name], -b.free))
    best: tuple[float, Running] | None = None
    for job in running:
        if job.backed_up or job.backend == fastest.name or job.backend not in cost:
            continue
        remaining = remaining_s(job, cost, now)
        there = cost[fastest.name] * job.size_factor
        gain = remaining - there
        if remaining > speedup * there and (best is None or gain > best[0]):
            best = (gain, job)
    return (best[1], fastest) if best else None


SIZE_WINDOW = 256
"""Recent jobs whose source sizes say what counts as a big job."""
MIN_SIZES_FOR_BIG = 16


class SizeHints:
    """The sizes of recent jobs: which job is big, and by how much."""

    def __init__(self) -> None:
        self._window = SortedWindow(SIZE_WINDOW)

    def hints(self, source_bytes: int) -> tuple[bool, float]:
        """Whether a job is big (larger than the median of recent jobs, once enough are
        known) and its size over that median (clamped); remembers its size.

        The preprocessed size is the one hint of a job's cost that we have before it
        runs: big jobs go to the fastest free backend (:func:`balancer.routing.picker.pick`), and
        the factor scales its expected time for tail hedging (:mod:`balancer.routing.estimates`).
        """
        median = self._window.median_low()
        big = (
            median is not None and len(self._window) >= MIN_SIZES_FOR_BIG and source_bytes > median
        )
        self._window.append(source_bytes)
        return big, size_factor(source_bytes, median)
