"""Choosing a backend for a job (pure).

Among healthy backends with free slots:

- a job with an affinity (its digest) first goes to its choice on a consistent-hash
  ring of the backends that keep a result cache (points in proportion to speed),
  within a load bound, so that a repeat lands where the result may already be cached;
- a big job (the dispatcher says which: larger than most recent jobs) goes to the
  fastest backend with a free slot, since the longest jobs decide when a build ends;
- any other job draws two backends at random, weighted by free slots times speed, and
  takes the faster of the two (the one with more free slots on a tie). Two random
  choices keep independent balancers from herding onto the one server that looks best
  to all of them.

A backend's speed is its weight over its recent median job latency.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
import statistics
from collections.abc import Callable, Collection, Mapping, Sequence

from balancer.routing.backend import Backend


def seconds_per_job(candidates: Sequence[Backend]) -> dict[str, float]:
    """Each backend's expected job latency divided by its weight; a backend with no
    history yet is assumed typical (the median of those that have one)."""
    medians = {b.name: b.latency_quantile(0.5) for b in candidates}
    known = [m for m in medians.values() if m]
    default = statistics.median(known) if known else 1.0
    return {b.name: (medians[b.name] or default) / b.spec.weight for b in candidates}


RING_POINTS = 32
"""Points on the affinity ring of a backend of the caching backends' average speed; a
faster one has more (in proportion, at most 4 times as many), a slower one fewer
(at least one)."""
RING_TRIES = 16
"""Distinct backends an affinity walk looks at before it gives up (the job is then
picked as any other)."""
RING_STEPS = 512
"""Ring points an affinity walk passes at most (the same backend's points can follow
each other)."""


def _hash64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def ring_points(name: str, count: int) -> list[int]:
    """Where backend ``name``'s first ``count`` points sit on the ring."""
    return [_hash64(f"{name}#{k}".encode()) for k in range(count)]


def point_count(speed: float, mean_speed: float) -> int:
    return max(1, min(4 * RING_POINTS, round(RING_POINTS * speed / mean_speed)))


class AffinityRing:
    """Consistent hashing over the backends that keep a result cache, each with points
    in proportion to its speed: a repeat of a job lands where the result may be cached,
    a server twice as fast owns about twice the share (affinity does not pin work to
    slow machines), and a backend that comes or goes moves only its own share. A
    lookup is a binary search and a short walk."""

    __slots__ = ("keys", "names")

    def __init__(self, points: Sequence[tuple[int, str]]) -> None:
        ordered = sorted(points)
        self.keys = [key for key, _ in ordered]
        self.names = [name for _, name in ordered]

    @classmethod
    def build(
        cls, cost: Mapping[str, float], points: Callable[[str, int], list[int]] = ring_points
    ) -> AffinityRing:
        """The ring of the backends named in ``cost`` (their seconds per job)."""
        if not cost:
            return cls([])
        # In name order: the mean is then the same float however ``cost`` was built (a
        # count at a .5 would round either way).
        speeds = {name: 1 / cost[name] for name in sorted(cost)}
        mean = sum(speeds.values()) / len(speeds)
        return cls([
            (key, name)
            for name, speed in speeds.items()
            for key in points(name, point_count(speed, mean))
        ])  # fmt: skip

    def choose(
        self,
        affinity: bytes,
        backends: Mapping[str, Backend],
        usable: Callable[[Backend], bool],
        average: float,
        load_bound: float,
    ) -> Backend | None:
        """The first usable backend clockwise from ``affinity`` whose busy slots after
        this job stay within ``load_bound`` times ``average`` (the caching backends'
        load per slot, after this job) times its slots, rounded up; else None."""
        keys = self.keys
        if not keys:
            return None
        start = bisect.bisect_left(keys, _hash64(affinity))
        seen: set[str] = set()
        for step in range(min(len(keys), RING_STEPS)):
            name = self.names[(start + step) % len(keys)]
            if name in seen:
                continue
            seen.add(name)
            backend = backends.get(name)
            if (
                backend is not None
                and usable(backend)
                and within_bound(backend, average, load_bound)
            ):
                return backend
            if len(seen) >= RING_TRIES:
                break
        return None


def within_bound(backend: Backend, average: float, load_bound: float) -> bool:
    """Its share of the load, in whole jobs, rounded up: on an idle farm every backend
    may take one job, or no job would ever follow its affinity."""
    allowed = math.ceil(load_bound * average * backend.slots - 1e-9)
    return backend.slots - backend.free + 1 <= allowed


def affinity_choice(
    backends: Sequence[Backend],
    usable: Callable[[Backend], bool],
    affinity: bytes,
    load_bound: float,
) -> Backend | None:
    """From scratch, what :class:`balancer.routing.roster.Roster` chooses for ``affinity``: the
    ring over every backend that keeps a result cache (their seconds per job as
    :func:`seconds_per_job` says over all ``backends``), the load bound's average over
    those in rotation, a choice among the ``usable``."""
    caching = [b for b in backends if b.caches_results]
    if not caching:
        return None
    cost = seconds_per_job(backends)
    in_rotation = [b for b in caching if b.healthy]
    busy = sum(b.slots - b.free for b in in_rotation)
    slots = sum(b.slots for b in in_rotation) or 1
    ring = AffinityRing.build({b.name: cost[b.name] for b in caching})
    by_name = {b.name: b for b in caching}
    return ring.choose(affinity, by_name, usable, (busy + 1) / slots, load_bound)


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
    if affinity is not None:

        def usable(backend: Backend) -> bool:
            return backend.name not in exclude and backend.available(now)

        chosen = affinity_choice(backends, usable, affinity, load_bound)
        if chosen is not None:
            return chosen
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    cost = seconds_per_job(candidates)

    def better(backend: Backend) -> tuple[float, int]:
        return (cost[backend.name], -backend.free)

    if big:
        return min(candidates, key=better)
    weights = [b.free / cost[b.name] for b in candidates]
    first, second = rng.choices(candidates, weights=weights, k=2)
    return min((first, second), key=better)
