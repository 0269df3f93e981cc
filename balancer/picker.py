"""Choosing a backend for a job (pure).

Among healthy backends with free slots (a job with an affinity first tries its
rendezvous-hash choice, within a load bound), draw two at random weighted by free
slots times weight, and keep the one with the better score, free slots times weight
divided by its recent median latency. Two random choices keep independent
balancers from herding onto the one server that looks best to all of them.
"""

from __future__ import annotations

import hashlib
import math
import random
import statistics
from collections.abc import Collection, Sequence

from balancer.backends import Backend


def _scores(candidates: Sequence[Backend]) -> dict[str, float]:
    medians = {b.name: b.latency_quantile(0.5) for b in candidates}
    known = [m for m in medians.values() if m]
    default = statistics.median(known) if known else 1.0
    return {b.name: b.free * b.spec.weight / (medians[b.name] or default) for b in candidates}


def rendezvous(candidates: Sequence[Backend], affinity: bytes, load_bound: float) -> Backend | None:
    """Consistent hashing with bounded loads: the candidate ranking highest for
    ``affinity`` whose load after this job stays within ``load_bound`` times the
    candidates' average load; None when none does.

    The ranking is weighted rendezvous hashing (weight / -ln(hash)), the weight being
    the backend's weight over its recent median latency: a server twice as fast owns
    twice the share of jobs, so affinity does not pin work to slow machines.
    """
    used = sum(b.slots - b.free for b in candidates)
    capacity = sum(b.slots for b in candidates) or 1
    average = (used + 1) / capacity
    medians = {b.name: b.latency_quantile(0.5) for b in candidates}
    known = [m for m in medians.values() if m]
    default = statistics.median(known) if known else 1.0

    def score(backend: Backend) -> float:
        digest = hashlib.blake2b(affinity + backend.name.encode(), digest_size=8).digest()
        uniform = (int.from_bytes(digest, "big") + 1) / (2**64 + 1)  # in (0, 1)
        weight = backend.spec.weight / (medians[backend.name] or default)
        return weight / -math.log(uniform)

    for backend in sorted(candidates, key=score, reverse=True):
        if (backend.slots - backend.free + 1) / backend.slots <= load_bound * average + 1e-9:
            return backend
    return None


def pick(
    backends: Sequence[Backend],
    rng: random.Random,
    now: float,
    exclude: Collection[str] = (),
    affinity: bytes | None = None,
    load_bound: float = 1.25,
) -> Backend | None:
    """The backend for the next job, or None when no healthy backend has a free slot.

    With an ``affinity`` (a job's digest), repeats of a job go to the same backend,
    where a server-side cache may hold the result, unless that would overload it.
    """
    candidates = [b for b in backends if b.name not in exclude and b.available(now)]
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    if affinity is not None:
        chosen = rendezvous(candidates, affinity, load_bound)
        if chosen is not None:
            return chosen
    weights = [b.free * b.spec.weight for b in candidates]
    first, second = rng.choices(candidates, weights=weights, k=2)
    if first is second:
        return first
    scores = _scores(candidates)
    return first if scores[first.name] >= scores[second.name] else second
