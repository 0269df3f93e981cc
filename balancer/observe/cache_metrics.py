"""What the result cache's Redis nodes have done, for /status and Prometheus
(balancer/observe/stats.py asks; the counts live in cache/node_stats.py).

Per node (``host:port``): ``distlb_cache_node_lookups_total{node,result="hit|miss"}``
(lookups it answered), ``distlb_cache_node_bypasses_total{node}`` (operations it failed,
timed out, or that were skipped while it counted as down), and the histogram
``distlb_cache_node_seconds{node}`` of its answered lookups' latency.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from cache import ResultCache
from cache.node_stats import NodeBook, NodeStats


def cache_nodes(cache: ResultCache) -> list[NodeStats]:
    """Every Redis node the cache's stores have used, by name."""
    books = [book for s in cache.stores if isinstance(book := getattr(s, "nodes", None), NodeBook)]
    return [book.nodes[name] for book in books for name in sorted(book.nodes)]


def nodes_status(cache: ResultCache) -> list[dict[str, object]]:
    """/status ``cache.nodes``: node, hits, misses, bypasses, p50_ms, p99_ms."""
    return [node.snapshot() for node in cache_nodes(cache)]


def cluster_masters(cache: ResultCache) -> list[str] | None:
    """/status ``cache.masters``: a Redis Cluster's masters as the balancer's client
    knows them now (it follows a failover by itself); None without a cluster."""
    for store in cache.stores:
        masters = getattr(store, "masters", None)
        if callable(masters):
            found = masters()
            if found is not None:
                return list(found)
    return None


def node_families(cache: ResultCache) -> Iterator[Metric]:
    lookups = CounterMetricFamily(
        "distlb_cache_node_lookups",
        "Lookups a Redis node answered: found (hit) or not (miss)",
        labels=["node", "result"],
    )
    bypasses = CounterMetricFamily(
        "distlb_cache_node_bypasses",
        "Operations on a Redis node that failed, timed out or were skipped while it was down",
        labels=["node"],
    )
    seconds = HistogramMetricFamily(
        "distlb_cache_node_seconds", "Latency of the lookups a Redis node answered", labels=["node"]
    )
    for node in cache_nodes(cache):
        lookups.add_metric([node.name, "hit"], node.hits)
        lookups.add_metric([node.name, "miss"], node.misses)
        bypasses.add_metric([node.name], node.bypasses)
        seconds.add_metric([node.name], node.histogram(), node.seconds_sum)
    yield lookups
    yield bypasses
    yield seconds
