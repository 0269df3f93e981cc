"""Hedging: when a job gets a second (or third) copy on another backend.

- **Late**: every running copy is past its hedge delay (a fixed ``--hedge-after``, or
  the larger of ``--hedge-min`` and 3 x that backend's p95): the fastest free backend
  gets a copy. A hedge can hang too, so the next one waits for it to be late as well.
- **Tail**: while no job waits for a slot, a running job that a free, much faster
  backend would most likely finish ``--tail-hedge`` times sooner is backed up there
  (balancer/routing/estimates.py decides which; :class:`TailWatcher` asks it when the pool changes,
  at most every ``TAIL_CHECK_S``).
Both are bounded by ``--max-hedges`` per job. Rescues (every copy on a backend out of
rotation) and the attempt loop itself are in balancer/dispatch/dispatcher.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Sequence
from typing import Protocol

from balancer.routing.backend import Backend
from balancer.routing.estimates import Running, backup_choice
from balancer.routing.roster import Roster

TAIL_CHECK_S = 0.05
"""Changes come with every job's end and every report: the tail hedge looks at most
this often (it backs up jobs expected to take twice as long where they are)."""


def hedge_delay(backend: Backend, hedge_after_s: float | None, hedge_min_s: float) -> float:
    """How long a copy on ``backend`` may run before it counts as late."""
    if hedge_after_s is not None:
        return hedge_after_s
    p95 = backend.latency_quantile(0.95) or 0.0
    return max(hedge_min_s, 3 * p95)


class Copy(Protocol):
    """A running copy of a job, as the attempt loop keeps it."""

    @property
    def running(self) -> Running: ...

    @property
    def late_at(self) -> float: ...


def next_hedge(
    copies: Sequence[Copy],
    backends: dict[str, Backend],
    exclude: Collection[str],
    pick_fastest: Callable[[], Backend | None],
    now: float,
) -> tuple[str, Backend | None]:
    """What to add to a job whose copies all run on backends in rotation, with hedges
    left: ``("tail", backend)`` for a backup the tail watcher asked for, ``("late",
    backend)`` for a late job, ``("late", None)`` when it is late but no backend is
    free (wait for a change), or ``("", None)``: nothing yet."""
    first = copies[0].running
    if len(copies) == 1 and first.backed_up:
        chosen = backends.get(first.backup_to)
        first.backup.clear()
        if chosen is not None and chosen.name not in exclude and chosen.available(now):
            return "tail", chosen
        # (a backup it cannot take: it may still be late, and a late copy is due)
    if all(now >= c.late_at for c in copies):
        return "late", pick_fastest()
    return "", None


class TailWatcher:
    """Looks for a running job to back up on a faster free backend, soon after the pool
    changes and while no job waits for a slot."""

    def __init__(
        self,
        roster: Roster,
        running: set[Running],
        speedup: float,
        waiting: Callable[[], int],
        backed_up: Callable[[Running], None],
    ) -> None:
        self.roster = roster
        self.running = running
        self.speedup = speedup
        self.waiting = waiting
        self.backed_up = backed_up
        """Called with the job chosen (its ``backup_to`` set): wake it."""
        self._check: asyncio.TimerHandle | None = None

    def _wanted(self) -> bool:
        return bool(self.running) and not self.waiting() and self.speedup > 0

    def changed(self) -> None:
        if not self._wanted() or self._check is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.look()
            return
        self._check = loop.call_later(TAIL_CHECK_S, self.look)

    def look(self) -> None:
        self._check = None
        if not self._wanted():
            return
        now = time.monotonic()
        fastest = self.roster.fastest(now)
        if fastest is None:
            return
        choice = backup_choice(self.running, (), now, self.speedup, self.roster.costs, fastest)
        if choice is not None:
            running, backend = choice
            running.backup_to = backend.name
            running.backup.set()
            self.backed_up(running)
