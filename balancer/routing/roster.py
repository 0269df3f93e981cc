"""The pool's live index of its backends, kept up as they change, so that a pick costs
the same with 2 backends or 500.

:mod:`balancer.routing.picker` says what a pick is, from scratch, over a list of backends.
The roster gives the same answers without walking the list:

- each backend's seconds per job (its median recent latency over its weight) is kept,
  recomputed only when that backend's latency window changes; a backend with no
  history is assumed typical, the median of those that have one, and that default is
  recomputed at most once a ``default_every_s`` (it moves slowly);
- a tree over the backends holds, per subtree, the total pick weight (free slots over
  seconds per job, 0 for a backend that cannot take a job) and the fastest available
  backend: a weighted draw walks one path from the root, and the fastest free
  backend is read at the root;
- a backend that turned a job away is held out until its hold ends (a heap of hold
  ends, looked at on each pick).

Every change a pick depends on reaches :meth:`Roster.changed` through
:attr:`balancer.routing.backend.Backend.on_change`. A draw is checked against the backend
itself before it is returned, so a missed change costs a redraw, never a wrong pick.
"""

from __future__ import annotations

import heapq
import random
import statistics
import time
from collections.abc import Callable, Collection, Iterable, Mapping

from balancer.routing.backend import Backend
from balancer.routing.picker import RING_POINTS, AffinityRing, ring_points
from balancer.routing.picker import pick as pick_from_scratch

DEFAULT_EVERY_S = 1.0
RING_DRIFT = 1.25
"""The affinity ring is rebuilt (at most once a ``default_every_s``) when a caching
backend's seconds per job moved by more than this factor since it was built."""
MAX_DRAWS = 16
"""Draws before a pick gives up on the index and walks the list (only when most of
what the index offers is excluded)."""

Key = tuple[float, int, str]
"""(seconds per job, -free slots, name): the lower the better; the name breaks ties."""


class Roster:
    def __init__(
        self,
        default_every_s: float = DEFAULT_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.default_every_s = default_every_s
        self.clock = clock
        self._rng = random.Random()  # noqa: S311 (ties in a walk, not secrets)
        self._backends: list[Backend] = []
        self._slot: dict[str, int] = {}
        self._size = 1
        self._weight: list[float] = [0.0, 0.0]
        self._best: list[Key | None] = [None, None]
        self._median: dict[str, float | None] = {}
        self._cost: dict[str, float] = {}
        self.default_cost = 1.0
        self._default_at = float("-inf")
        self._holds: list[tuple[float, str]] = []
        self._held_until: dict[str, float] = {}
        self._caching: set[str] = set()
        self._by_name: dict[str, Backend] = {}
        self._ring: AffinityRing | None = None
        """Over the backends that keep a result cache; None: to be built."""
        self._ring_cost: dict[str, float] = {}
        self._ring_checked_at = float("-inf")
        self._points: dict[str, list[int]] = {}
        self._caching_load: dict[str, tuple[int, int]] = {}
        """Busy and all slots of each caching backend in rotation (the load bound's average)."""
        self._caching_busy = 0
        self._caching_slots = 0

    # -- keeping up -------------------------------------------------------------

    def rebuild(self, backends: Iterable[Backend]) -> None:
        """Index ``backends`` afresh (at start and on a reload)."""
        self._backends = list(backends)
        self._slot = {b.name: i for i, b in enumerate(self._backends)}
        self._by_name = {b.name: b for b in self._backends}
        self._caching = set()
        self._caching_load = {}
        self._caching_busy = self._caching_slots = 0
        self._ring = None
        size = 1
        while size < len(self._backends):
            size *= 2
        self._size = size
        self._weight = [0.0] * (2 * size)
        self._best = [None] * (2 * size)
        self._median = {b.name: b.latency_quantile(0.5) for b in self._backends}
        self._holds = []
        self._held_until = {}
        now = self.clock()
        for backend in self._backends:  # holds that outlive the rebuild still expire
            if backend.busy_until > now:
                self._held_until[backend.name] = backend.busy_until
                heapq.heappush(self._holds, (backend.busy_until, backend.name))
        self.default_cost = self._median_of_medians()
        self._default_at = now
        for backend in self._backends:
            self._cost[backend.name] = self._cost_of(backend)
            self._track_caching(backend)
            self._set_leaf(backend, now)
        for i in range(size - 1, 0, -1):
            self._pull(i)

    def changed(self, backend: Backend) -> None:
        """Something about ``backend`` changed: its leaf, and the path above it."""
        slot = self._slot.get(backend.name)
        if slot is None or self._backends[slot] is not backend:
            return  # not (or no longer) one of ours
        self._track_caching(backend)
        median = backend.latency_quantile(0.5)
        if median != self._median.get(backend.name):
            self._median[backend.name] = median
            self._cost[backend.name] = self._cost_of(backend)
        now = self.clock()
        if backend.busy_until > now and self._held_until.get(backend.name) != backend.busy_until:
            self._held_until[backend.name] = backend.busy_until
            heapq.heappush(self._holds, (backend.busy_until, backend.name))
        self._set_leaf(backend, now)
        i = (slot + self._size) // 2
        while i:
            self._pull(i)
            i //= 2

    def _track_caching(self, backend: Backend) -> None:
        """Keep the set of caching backends (a change of it rebuilds the ring) and the
        busy and all slots of those in rotation."""
        name = backend.name
        caching = backend.caches_results
        if caching != (name in self._caching):
            if caching:
                self._caching.add(name)
            else:
                self._caching.discard(name)
            self._ring = None
        old = self._caching_load.pop(name, None)
        if old is not None:
            self._caching_busy -= old[0]
            self._caching_slots -= old[1]
        if caching and backend.healthy:
            load = (backend.slots - backend.free, backend.slots)
            self._caching_load[name] = load
            self._caching_busy += load[0]
            self._caching_slots += load[1]

    def _affinity_ring(self, now: float) -> AffinityRing:
        """The ring, rebuilt when the caching backends changed, or (looked at once a
        ``default_every_s``) when one's speed moved by more than :data:`RING_DRIFT`."""
        if self._ring is not None and now - self._ring_checked_at >= self.default_every_s:
            self._ring_checked_at = now
            for name, built in self._ring_cost.items():
                ratio = self._cost.get(name, built) / built
                if not 1 / RING_DRIFT <= ratio <= RING_DRIFT:
                    self._ring = None
                    break
        if self._ring is None:
            self._ring_cost = {name: self._cost[name] for name in self._caching}
            self._ring = AffinityRing.build(self._ring_cost, self._points_of)
            self._ring_checked_at = now
        return self._ring

    def _points_of(self, name: str, count: int) -> list[int]:
        points = self._points.get(name)
        if points is None or len(points) < count:
            points = self._points[name] = ring_points(name, max(count, 4 * RING_POINTS))
        return points[:count]

    def _cost_of(self, backend: Backend) -> float:
        return (self._median.get(backend.name) or self.default_cost) / backend.spec.weight

    def refresh_default(self, now: float, force: bool = False) -> None:
        """Recompute the seconds per job assumed for backends with no history (the
        median of the others' medians), if ``default_every_s`` has passed or ``force``."""
        if not force and now - self._default_at < self.default_every_s:
            return
        self._default_at = now
        default = self._median_of_medians()
        if default == self.default_cost:
            return
        self.default_cost = default
        for backend in self._backends:
            if not self._median.get(backend.name):
                self._cost[backend.name] = self._cost_of(backend)
                self.changed(backend)

    def refresh(self, now: float) -> None:
        """Bring what is recomputed only now and then up to date at once: the default
        seconds per job and the affinity ring (for tests against the from-scratch pick)."""
        self.refresh_default(now, force=True)
        self._ring = None

    def _median_of_medians(self) -> float:
        known = [m for m in self._median.values() if m]
        return statistics.median(known) if known else 1.0

    def _expire_holds(self, now: float) -> None:
        holds = self._holds
        while holds and holds[0][0] <= now:
            _, name = heapq.heappop(holds)
            slot = self._slot.get(name)
            if slot is not None:
                self.changed(self._backends[slot])

    def _set_leaf(self, backend: Backend, now: float) -> None:
        i = self._slot[backend.name] + self._size
        if backend.available(now):
            cost = self._cost[backend.name]
            free = backend.free
            self._weight[i] = free / cost
            self._best[i] = (cost, -free, backend.name)
        else:
            self._weight[i] = 0.0
            self._best[i] = None

    def _pull(self, i: int) -> None:
        left, right = 2 * i, 2 * i + 1
        self._weight[i] = self._weight[left] + self._weight[right]
        a, b = self._best[left], self._best[right]
        self._best[i] = a if b is None or (a is not None and a <= b) else b

    # -- reading ----------------------------------------------------------------

    @property
    def costs(self) -> Mapping[str, float]:
        """Seconds per job of every indexed backend (do not change it)."""
        return self._cost

    def cost(self, backend: Backend) -> float:
        return self._cost[backend.name]

    def weight(self, backend: Backend) -> float:
        """Its pick weight in the index (free slots over seconds per job; 0: not available)."""
        return self._weight[self._slot[backend.name] + self._size]

    @property
    def total_weight(self) -> float:
        return self._weight[1]

    @property
    def any_caching(self) -> bool:
        """Whether any backend keeps a result cache (an affinity is worth computing)."""
        return bool(self._caching)

    def _tick(self, now: float) -> None:
        self._expire_holds(now)
        self.refresh_default(now)

    def fastest(self, now: float, exclude: Collection[str] = ()) -> Backend | None:
        """The available backend with the least seconds per job (most free on a tie)."""
        self._tick(now)
        best = self._best[1]
        if best is None:
            return None
        backend = self._backends[self._slot[best[2]]]
        if best[2] in exclude or not backend.available(now):
            return self._walk(now, exclude, True, self._rng)
        return backend

    def _draw(self, rng: random.Random) -> Backend | None:
        total = self._weight[1]
        if total <= 0:
            return None
        u = rng.random() * total
        i, size, weight = 1, self._size, self._weight
        while i < size:
            left = 2 * i
            if u < weight[left]:
                i = left
            else:
                u -= weight[left]
                i = left + 1
        if weight[i] <= 0:  # rounding walked onto an empty leaf
            return None
        return self._backends[i - size]

    def pick(
        self,
        rng: random.Random,
        now: float,
        exclude: Collection[str] = (),
        affinity: bytes | None = None,
        load_bound: float = 1.25,
        big: bool = False,
    ) -> Backend | None:
        """What :func:`balancer.routing.picker.pick` would choose, from the index."""
        self._tick(now)
        if affinity is not None and self._caching:
            average = (self._caching_busy + 1) / (self._caching_slots or 1)
            chosen = self._affinity_ring(now).choose(
                affinity, self._by_name,
                lambda b: b.name not in exclude and b.available(now), average, load_bound,
            )  # fmt: skip
            if chosen is not None:
                return chosen
        if big:
            return self.fastest(now, exclude)
        picked: list[Backend] = []
        for _ in range(MAX_DRAWS):
            backend = self._draw(rng)
            if backend is None:
                if self._weight[1] <= 0:
                    return None
                continue
            if backend.name in exclude:
                continue
            if not backend.available(now):
                self.changed(backend)  # the index was behind: catch up, draw again
                continue
            picked.append(backend)
            if len(picked) == 2:
                cost = self._cost
                return min(picked, key=lambda b: (cost[b.name], -b.free))
        return self._walk(now, exclude, big, rng)

    def _walk(
        self, now: float, exclude: Collection[str], big: bool, rng: random.Random
    ) -> Backend | None:
        """The from-scratch pick, for when the index offers mostly excluded backends."""
        return pick_from_scratch(self._backends, rng, now, exclude, big=big)
