"""A server's job slots: how many are busy, and by whose connection (the status long
poll is told of each change).

What lives here: the counts, on the event loop. What must not: deciding who gets one
(``admission.py``, ``connection.py``) or reporting them (``stats.py``, ``http_status.py``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable


class Slots:
    """Counts busy job slots. Not thread-safe; lives on the event loop."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a server needs at least one slot, got {capacity}")
        self.capacity = capacity
        self.busy = 0
        self.busy_max = 0
        """The most slots ever busy at once (proof that a balancer never overfilled us)."""
        self._holders: Counter[str] = Counter()
        self._accepting = True
        self._offered = capacity
        self.refusing: str | None = None
        """Why no job may start now whatever the slots (the machine is short of
        memory: server/machine.py), or None."""
        self.on_change: Callable[[], None] | None = None
        """Called after every change of ``busy`` or ``accepting`` (the status long poll)."""

    @property
    def accepting(self) -> bool:
        return self._accepting

    @accepting.setter
    def accepting(self, value: bool) -> None:
        self._accepting = value
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    @property
    def offered(self) -> int:
        """The slots offered now: the configured ones, or fewer while the machine is
        busy with other work or short of memory (server/machine.py)."""
        return self._offered

    @offered.setter
    def offered(self, value: int) -> None:
        value = max(0, min(self.capacity, value))
        if value != self._offered:
            self._offered = value
            self._changed()

    @property
    def free(self) -> int:
        return max(0, self._offered - self.busy) if self.accepting else 0

    @property
    def holders(self) -> list[str]:
        """Each busy slot's connection, by its client's ``IP:PORT`` (a balancer tells
        its own jobs from others' by these: in flight either way, a job it counts may
        not hold a slot yet, or no longer)."""
        return sorted(self._holders.elements())

    def try_acquire(self, holder: str = "?", probe: bool = False) -> bool:
        """Take a slot for the connection from ``holder`` if one is free and we are
        accepting work. A health probe (a trivial compile) may take any configured slot
        free, offered or not: a server that offers none while its machine is busy is
        still shown to work, and stays in its balancers' rotation."""
        if probe and self.accepting and self.busy < self.capacity:
            pass
        elif not self.accepting or self.busy >= self._offered or self.refusing is not None:
            return False
        self.busy += 1
        self._holders[holder] += 1
        self.busy_max = max(self.busy_max, self.busy)
        self._changed()
        return True

    def release(self, holder: str = "?") -> None:
        if self.busy <= 0 or self._holders[holder] <= 0:
            raise RuntimeError(f"released a slot not taken by {holder}")
        self.busy -= 1
        self._holders[holder] -= 1
        if not self._holders[holder]:
            del self._holders[holder]
        self._changed()


class SlotHold:
    """One admitted job's slot; released once, as soon as the compile is over when its
    reply fits the reply budget (sending needs no slot, and a balancer may already send
    the next job), else once the reply is sent."""

    def __init__(self, slots: Slots, holder: str) -> None:
        self._slots: Slots | None = slots
        self._holder = holder

    def release(self) -> None:
        if self._slots is not None:
            self._slots.release(self._holder)
            self._slots = None


class ReplyBudget:
    """Bytes of replies held for readers after their compile gave back its slot. A reply
    that does not fit keeps its job's slot until sent, so slow readers can hold at most
    this plus one reply per slot."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.in_use = 0
        self.refused = 0

    def try_take(self, size: int) -> bool:
        if self.in_use + size > self.max_bytes:
            self.refused += 1
            return False
        self.in_use += size
        return True

    def snapshot(self) -> dict[str, int]:
        """What /status shows: bytes held now, the bound, replies that did not fit."""
        return {"bytes": self.in_use, "max": self.max_bytes, "refused": self.refused}

    def give_back(self, size: int) -> None:
        self.in_use -= size
