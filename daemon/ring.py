"""A fixed number of rows of named numbers, the oldest overwritten: the dashboards'
last hour, in a few hundred KB that never grow."""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence

from client.quantiles import quantile


class Ring:
    """A fixed number of rows of named float columns; the oldest is overwritten."""

    def __init__(self, columns: Sequence[str], size: int) -> None:
        self.columns = tuple(columns)
        self.size = size
        self._data = {name: array("d", bytes(8 * size)) for name in self.columns}
        self._next = 0
        self.count = 0

    def append(self, row: dict[str, float]) -> None:
        for name in self.columns:
            self._data[name][self._next] = row.get(name, math.nan)
        self._next = (self._next + 1) % self.size
        self.count = min(self.count + 1, self.size)

    def export(self, since: float = 0.0) -> dict[str, list[float | None]]:
        """The rows after time ``since``, oldest first, column by column (NaN: None)."""
        times = self._data["t"]
        order = []
        for back in range(1, self.count + 1):  # (from the newest: a recent since is quick)
            i = (self._next - back) % self.size
            if times[i] <= since:
                break
            order.append(i)
        order.reverse()
        return {
            name: [None if math.isnan(v := self._data[name][i]) else v for i in order]
            for name in self.columns
        }


def quantile_ms(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (seconds) in ms, NaN (no value) when empty."""
    value = quantile(values, q) if values else None
    return math.nan if value is None else round(value * 1000, 1)
