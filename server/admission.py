"""Admission: N job slots; a connection that finds them all busy is turned away (pure)."""

from __future__ import annotations


class Slots:
    """Counts busy job slots. Not thread-safe; lives on the event loop."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a server needs at least one slot, got {capacity}")
        self.capacity = capacity
        self.busy = 0
        self.busy_max = 0
        """The most slots ever busy at once (proof that a balancer never overfilled us)."""
        self.accepting = True

    @property
    def free(self) -> int:
        return self.capacity - self.busy if self.accepting else 0

    def try_acquire(self) -> bool:
        """Take a slot if one is free and we are accepting work."""
        if not self.accepting or self.busy >= self.capacity:
            return False
        self.busy += 1
        self.busy_max = max(self.busy_max, self.busy)
        return True

    def release(self) -> None:
        if self.busy <= 0:
            raise RuntimeError("released a slot that was not taken")
        self.busy -= 1
