"""Choosing a backend for a job (pure).

Among healthy backends with free slots:

- a job with an affinity (its digest) first goes to its rendezvous-hash choice among
  the backends that keep a result cache, within a load bound, so that a repeat lands
  where the result may already be cached;
- a big job (the dispatcher says which: larger than most recent jobs) goes to the
  fastest backend with a free slot, since the longest jobs decide when a build ends;
- any other job draws two backends at random, weighted by free slots times speed, and
  takes the faster of the two (the one with more free slots on a tie). Two random
  choices keep independent balancers from herding onto the one server that looks best
  to all of them.

A backend's speed is its weight over its recent median job latency.
"""

from __future__ import annotations

import hashlib
import math
import random
import statistics
from collections.abc import Collection, Mapping, Sequence

from balancer.backends import Backend


def seconds_per_job(candidates: Sequence[Backend]) -> dict[str, float]:
    """Each backend's expected job latency divided by its weight; a backend with no
    history yet is assumed typical (the median of those that have one)."""
    medians = {b.name: b.latency_quantile(0.5) for b in candidates}
    known = [m for m in medians.values() if m]
    default = statistics.median(known) if known else 1.0
    return {b.name: (medians[b.name] or default) / b.spec.weight for b in candidates}


def rendezvous(
    candidates: Sequence[Backend],
    affinity: bytes,
    load_bound: float,
    cost: Mapping[str, float] | None = None,
) -> Backend | None:
    """Consistent hashing with bounded loads: the candidate ranking highest for
    ``affinity`` whose busy slots after this job stay within ``load_bound`` times the
    candidates' average load (per slot, after this job) times its slots, rounded up;
    None when none does.

    The ranking is weighted rendezvous hashing (weight / -ln(hash)), the weight being
    the backend's speed: a server twice as fast owns twice the share of jobs, so
    affinity does not pin work to slow machines. ``cost``: each candidate's seconds per
    job, when the caller keeps them (:class:`balancer.roster.Roster`).
    """
    used = sum(b.slots - b.free for b in candidates)
    capacity = sum(b.slots for b in candidates) or 1
    average = (used + 1) / capacity
    if cost is None:
        cost = seconds_per_job(candidates)

    def score(backend: Backend) -> float:
        digest = hashlib.blake2b(affinity + backend.name.encode(), digest_size=8).digest()
        uniform = (int.from_bytes(digest, "big") + 1) / (2**64 + 1)  # in (0, 1)
        return (1 / cost[backend.name]) / -math.log(uniform)

    for backend in sorted(candidates, key=score, reverse=True):
        # Its share of the load, in whole jobs, rounded up: on an idle farm every
        # backend may take one job, or no job would ever follow its affinity.
        allowed = math.ceil(load_bound * average * backend.slots - 1e-9)
        if backend.slots - backend.free + 1 <= allowed:
            return backend
    return None


def pick(
    backends: Sequence[Backend],
    rng: random.Random,
    now: float,
    exclude: Collection[str] = (),
    affinity: bytes | None = None,
    load_bound: float = 1.25,
    big: bool = False,
) -> Backend | None:
    """The backend for the next job, or None when no healthy backend has a free slot."""
    candidates = [b for b in backends if b.name not in exclude and b.available(now)]
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    if affinity is not None:
        caching = [b for b in candidates if b.caches_results]
        chosen = rendezvous(caching, affinity, load_bound) if caching else None
        if chosen is not None:
            return chosen
    cost = seconds_per_job(candidates)

    def better(backend: Backend) -> tuple[float, int]:
        return (cost[backend.name], -backend.free)

    if big:
        return min(candidates, key=better)
    weights = [b.free / cost[b.name] for b in candidates]
    first, second = rng.choices(candidates, weights=weights, k=2)
    return min((first, second), key=better)
