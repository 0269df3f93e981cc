"""Quantiles of latency samples, as the balancer's and the load generator's reports give them."""

from __future__ import annotations

from collections.abc import Iterable


def quantile(values: Iterable[float], q: float) -> float | None:
    """The value at rank ``int(q * n)`` of the ``n`` sorted values (the largest for
    ``q`` = 1), or None when there are none."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
