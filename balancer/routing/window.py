"""A window of recent values kept sorted (latencies, job sizes): quantiles by lookup."""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque


class SortedWindow:
    """The last ``size`` values, kept sorted too: a quantile is a lookup, and adding a
    value costs a binary search and a short move (no sort per question)."""

    __slots__ = ("_recent", "_sorted")

    def __init__(self, size: int) -> None:
        self._recent: deque[float] = deque(maxlen=size)
        self._sorted: list[float] = []

    def __len__(self) -> int:
        return len(self._recent)

    def append(self, value: float) -> None:
        recent = self._recent
        if recent.maxlen is not None and len(recent) == recent.maxlen:
            del self._sorted[bisect_left(self._sorted, recent[0])]
        recent.append(value)
        insort(self._sorted, value)

    def quantile(self, q: float) -> float | None:
        """As :func:`client.quantiles.quantile`: the value at rank ``int(q * n)``."""
        ordered = self._sorted
        if not ordered:
            return None
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def median_low(self) -> float | None:
        """As :func:`statistics.median_low`."""
        ordered = self._sorted
        return ordered[(len(ordered) - 1) // 2] if ordered else None

    def values(self) -> list[float]:
        """The values in the order they came."""
        return list(self._recent)
