"""What each Redis node has cost and served, and when to stop asking it (pure).

A node is counted under its ``host:port``: lookups that found an entry (hits), that
found none (misses), operations skipped or failed because it was down or slow
(bypasses), and the latency of its answered lookups (a window for /status
quantiles, cumulative buckets for a Prometheus histogram). The breaker is per node:
in a cluster, a dead master costs the keys in its slots, not the whole cache.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from dataclasses import dataclass, field

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Upper bounds of ``distlb_cache_node_seconds`` (+Inf follows)."""
LATENCY_WINDOW = 1000
TRIP_AFTER = 3
"""Slow answers in a row that make a node count as down."""
MAX_NODES = 256
"""Nodes tracked at most (a cluster that reshards endlessly must not grow this)."""


@dataclass
class NodeStats:
    name: str
    hits: int = 0
    misses: int = 0
    bypasses: int = 0
    down_until: float = 0.0
    failures_in_a_row: int = 0
    bucket_counts: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS_S))
    """Lookups per latency bucket (not cumulative; :meth:`histogram` adds them up)."""
    seconds_count: int = 0
    seconds_sum: float = 0.0
    _recent: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    _sorted: list[float] = field(default_factory=list)

    def available(self, now: float) -> bool:
        return now >= self.down_until

    def answered(self, seconds: float, found: bool | None) -> None:
        """An operation it answered (``found``: a lookup's result; None: not a lookup)."""
        self.failures_in_a_row = 0
        if found is None:
            return
        if found:
            self.hits += 1
        else:
            self.misses += 1
        index = bisect_left(LATENCY_BUCKETS_S, seconds)
        if index < len(self.bucket_counts):
            self.bucket_counts[index] += 1
        self.seconds_count += 1
        self.seconds_sum += seconds
        if len(self._recent) == self._recent.maxlen:
            del self._sorted[bisect_left(self._sorted, self._recent[0])]
        self._recent.append(seconds)
        insort(self._sorted, seconds)

    def failed(self, now: float, slow: bool, retry_s: float) -> None:
        """An operation it did not answer: a refusal or a broken connection makes it
        down for ``retry_s``; a slow answer only after :data:`TRIP_AFTER` in a row."""
        self.bypasses += 1
        self.failures_in_a_row += 1
        if not slow or self.failures_in_a_row >= TRIP_AFTER:
            self.down_until = now + retry_s

    def skipped(self) -> None:
        self.bypasses += 1

    def quantile_ms(self, q: float) -> float | None:
        if not self._sorted:
            return None
        value = self._sorted[min(len(self._sorted) - 1, int(q * len(self._sorted)))]
        return round(value * 1000, 3)

    def histogram(self) -> list[tuple[str, int]]:
        """Cumulative ``(le, count)`` pairs, +Inf last, as Prometheus wants them."""
        total, out = 0, []
        for bound, count in zip(LATENCY_BUCKETS_S, self.bucket_counts, strict=True):
            total += count
            out.append((repr(bound), total))
        out.append(("+Inf", self.seconds_count))
        return out

    def snapshot(self) -> dict[str, object]:
        return {
            "node": self.name,
            "hits": self.hits,
            "misses": self.misses,
            "bypasses": self.bypasses,
            "p50_ms": self.quantile_ms(0.5),
            "p99_ms": self.quantile_ms(0.99),
        }


@dataclass
class NodeBook:
    """Every node that served or failed an operation, by name."""

    nodes: dict[str, NodeStats] = field(default_factory=dict)

    def available(self, name: str, now: float) -> bool:
        """Whether ``name`` may be asked now (a node never seen may)."""
        found = self.nodes.get(name)
        return found is None or found.available(now)

    def node(self, name: str) -> NodeStats:
        found = self.nodes.get(name)
        if found is None:
            if len(self.nodes) >= MAX_NODES:
                # The least used name goes: most likely a node that has left (a
                # cluster resharded, a sentinel master replaced).
                quiet = min(self.nodes.values(), key=lambda n: n.hits + n.misses)
                del self.nodes[quiet.name]
            found = self.nodes[name] = NodeStats(name)
        return found

    def failing(self) -> set[str]:
        """The nodes whose latest operation failed (none answered since)."""
        return {name for name, node in self.nodes.items() if node.failures_in_a_row}

    def snapshot(self) -> list[dict[str, object]]:
        return [self.nodes[name].snapshot() for name in sorted(self.nodes)]
