"""Fair share: while jobs wait for slots, a freed slot goes to the share (a client, or
its group: balancer/routing/groups.py) that has used the least compile time recently,
over its weight.

- A share's recent use is the compile time its jobs held slots (every attempt, hedges
  too), decaying by e^(-age / ``--fair-memory``), plus the time so far of its jobs
  running now: a client that floods the farm is charged as it floods, not only as its
  jobs end. Its rank is that over its weight; the lowest rank comes first.
- Waiting jobs are woken lowest rank first (balancer/routing/queue.py), the longest
  waiting first within one share; and a job may not take a free slot while a job of a
  share of lower rank waits for one of the same kind (a compiler, pump or not: a job
  of another kind might not be able to use that slot), for a short time at most
  (balancer/routing/queue.py ``YIELD_MAX_S``: the lighter job may yet be unable to use
  that backend, or have gone). Alone on the farm, a client yields to no one and gets
  every slot.
- With ``--workers N`` the uses, the running jobs and the waiting jobs are counted in
  memory the workers share (balancer/workers/shares.py): a worker's job yields to a
  lighter share's job that waits in another worker, which hears of the freed slot too.

With ``--fair-share off`` the waiting jobs are woken longest waiting first, whoever
they are (the order before fair share), and nobody yields.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from balancer.routing.groups import Groups, GroupsFile, Who
from balancer.workers.shares import CAPACITY, OVERFLOW, ShareTable, kind_bit

SHOWN = 256
"""Shares /status and the metrics show: those of most recent use (of those with any)."""

SNAPSHOT_S = 0.005
"""How long the ranks of the shares that wait are reused by the yield check (each
change of this worker's own waiting jobs reads them again at once)."""


_NO_GROUPS = Groups()


@dataclass(frozen=True)
class Share:
    """A job's share, resolved to its entry in the table."""

    who: Who
    index: int


class FairShare:
    def __init__(
        self,
        table: ShareTable | None = None,
        memory_s: float = 60.0,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.table = table if table is not None else ShareTable()
        self.memory_s = memory_s
        self.enabled = enabled
        self.clock = clock
        self.groups_file: GroupsFile | None = None
        """``--fair-groups`` (re-read within a second of a change)."""
        self._waiting: dict[int, Counter[str]] = {}
        """Per share index, this worker's waiting jobs per kind."""
        self._generation = 0
        self._snapshot: tuple[int, float, list[tuple[float, int, int]]] | None = None
        self.yielded = 0
        """Times a job let a free slot go to a lighter share's waiting job."""
        self.queued: dict[str, list[float]] = {}
        """Per share, this worker's jobs and their seconds waiting for a slot."""

    @property
    def groups(self) -> Groups:
        return self.groups_file.groups() if self.groups_file is not None else _NO_GROUPS

    def who(self, address: str, principal: str | None) -> Who:
        """The share of a client at ``address``, authenticated as ``principal``."""
        return self.groups.who(address, principal)

    def share(self, who: Who) -> Share:
        # (a share idle for 4 memories has 2 % of its use left: its entry may be reused)
        return Share(who, self.table.entry(who.name, self.clock(), 4 * self.memory_s))

    # -- use ------------------------------------------------------------------

    def started(self, share: Share) -> float:
        """A job of ``share`` took a slot; returns when (give it to :meth:`ended`)."""
        now = self.clock()
        self.table.started(share.index, now)
        return now

    def ended(self, share: Share, started: float) -> None:
        self.table.ended(share.index, started, self.clock(), self.memory_s)

    def rank(self, share: Share) -> float:
        """Recent use over weight: the lowest is served first."""
        use = self.table.use(share.index, self.clock(), self.memory_s)
        return use.recent_s / share.who.weight

    def waited(self, share: Share, seconds: float) -> None:
        """A job of ``share`` ended after waiting ``seconds`` for slots in all."""
        name = share.who.name
        if name not in self.queued and len(self.queued) >= CAPACITY:
            name = OVERFLOW
        counts = self.queued.setdefault(name, [0, 0.0])
        counts[0] += 1
        counts[1] += max(0.0, seconds)

    # -- waiting ----------------------------------------------------------------

    def wait_begins(self, share: Share, kind: str) -> None:
        self._change(share, kind, +1)

    def wait_ends(self, share: Share, kind: str) -> None:
        self._change(share, kind, -1)

    def _change(self, share: Share, kind: str, delta: int) -> None:
        kinds = self._waiting.setdefault(share.index, Counter())
        kinds[kind] += delta
        if kinds[kind] <= 0:
            del kinds[kind]
        mask = 0
        for known in kinds:
            mask |= kind_bit(known)
        self.table.set_waiting(share.index, sum(kinds.values()), mask)
        if not kinds:
            del self._waiting[share.index]
        self._generation += 1

    def anyone_waits(self) -> bool:
        """Jobs wait for a slot, in this worker or another."""
        return bool(self._waiting) or self.table.waiting_elsewhere() > 0

    def yields(self, share: Share, kind: str) -> bool:
        """Whether a job of ``share`` must leave a free slot to a waiting job of a
        share of lower rank (of the same kind)."""
        if not self.enabled or not self.anyone_waits():
            return False
        bit = kind_bit(kind)
        waiting = self._waiting_ranks()
        mine = self.rank(share)
        for rank, index, elsewhere in waiting:
            if rank >= mine:
                break
            if index == share.index:
                continue
            # This worker's waiting jobs by their kinds; the others' by the kinds' bits.
            here = self._waiting.get(index)
            if (here is not None and kind in here) or elsewhere & bit:
                self.yielded += 1
                return True
        return False

    def _waiting_ranks(self) -> list[tuple[float, int, int]]:
        """(rank, index, kinds' bits in other workers) of every share with a waiting
        job, lowest rank first."""
        now = self.clock()
        snap = self._snapshot
        if snap is not None and snap[0] == self._generation and now - snap[1] < SNAPSHOT_S:
            return snap[2]
        uses = [(i, self.table.use(i, now, self.memory_s)) for i in self.table.waiting_entries()]
        ranked = sorted(
            (use.recent_s / self.groups.weight(use.name), index, use.kinds_elsewhere)
            for index, use in uses
            if use.waiting
        )
        self._snapshot = (self._generation, now, ranked)
        return ranked

    def order(self) -> Callable[[object], float]:
        """A waiter's rank for one round of waking (each share's rank read once);
        with fair share off, every waiter's is 0 (longest waiting first)."""
        if not self.enabled:
            return lambda _: 0.0
        memo: dict[int, float] = {}

        def rank(who: object) -> float:
            if not isinstance(who, Share):
                return 0.0
            found = memo.get(who.index)
            if found is None:
                found = memo[who.index] = self.rank(who)
            return found

        return rank

    def status(self) -> list[dict[str, object]]:
        """Every share seen, lowest rank first: its weight, recent compile seconds, rank,
        jobs running and waiting (all workers'), and this worker's jobs and their time
        waiting for slots (for /status and the metrics)."""
        now = self.clock()
        shares = []
        used = [use for _, use in self.table.all_used(now, self.memory_s)
                if use.running or use.waiting or use.recent_s >= 0.001]  # fmt: skip
        used.sort(key=lambda use: use.recent_s, reverse=True)
        for use in used[:SHOWN]:
            weight = self.groups.weight(use.name)
            jobs, queued = self.queued.get(use.name, (0, 0.0))
            shares.append({
                "name": use.name, "weight": weight, "recent_s": round(use.recent_s, 3),
                "rank": round(use.recent_s / weight, 3), "running": use.running,
                "waiting": use.waiting, "jobs": int(jobs), "queued_s": round(queued, 3),
            })  # fmt: skip
        shares.sort(key=lambda share: (share["rank"], share["name"]))
        return shares
