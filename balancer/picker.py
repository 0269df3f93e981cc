"""Choosing a backend for a job (pure).

Among healthy backends with free slots, draw two at random weighted by free
slots times weight, and keep the one with the better score, free slots times weight
divided by its recent median latency. Two random choices keep independent
balancers from herding onto the one server that looks best to all of them.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Collection, Sequence

from balancer.backends import Backend


def _scores(candidates: Sequence[Backend]) -> dict[str, float]:
    medians = {b.name: b.latency_quantile(0.5) for b in candidates}
    known = [m for m in medians.values() if m]
    default = statistics.median(known) if known else 1.0
    return {b.name: b.free * b.spec.weight / (medians[b.name] or default) for b in candidates}


def pick(
    backends: Sequence[Backend],
    rng: random.Random,
    now: float,
    exclude: Collection[str] = (),
) -> Backend | None:
    """The backend for the next job, or None when no healthy backend has a free slot."""
    candidates = [b for b in backends if b.name not in exclude and b.available(now)]
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    weights = [b.free * b.spec.weight for b in candidates]
    first, second = rng.choices(candidates, weights=weights, k=2)
    if first is second:
        return first
    scores = _scores(candidates)
    return first if scores[first.name] >= scores[second.name] else second
