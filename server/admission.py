"""Admission: N job slots; a connection that finds them all busy is turned away (pure)."""

from __future__ import annotations

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
        self._accepting = True
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
    def free(self) -> int:
        return self.capacity - self.busy if self.accepting else 0

    def try_acquire(self) -> bool:
        """Take a slot if one is free and we are accepting work."""
        if not self.accepting or self.busy >= self.capacity:
            return False
        self.busy += 1
        self.busy_max = max(self.busy_max, self.busy)
        self._changed()
        return True

    def release(self) -> None:
        if self.busy <= 0:
            raise RuntimeError("released a slot that was not taken")
        self.busy -= 1
        self._changed()
