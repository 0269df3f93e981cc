"""What the balancer counts, exported at scrape time from the state it already keeps."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import structlog
from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from balancer.dispatch.dispatcher import Dispatcher
from balancer.observe.activity import Activity, LiveJob
from balancer.observe.cache_metrics import cluster_masters, node_families, nodes_status
from balancer.observe.farm_metrics import machine_families, machine_of, share_families
from balancer.pool.pool import Pool
from client.cli import distlb_version
from client.quantiles import quantile
from daemon.self_report import ReloadStatus, self_families

JOB_SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1200)


DISPATCHER_METRICS = {
    "retries": "Jobs sent again after a backend failed",
    "hedges": "Late jobs also sent to a second backend",
    "tail_hedges": "Of the hedges, jobs backed up on a faster backend that came free",
    "waited_for_faster": (
        "Big jobs that waited for a faster backend rather than start on a slower free one"
    ),
    "rescues": "Jobs sent elsewhere at once because every backend running them left rotation",
    "deadlines": "Attempts given up at their deadline (no reply in time)",
    "fair_yields": "Free slots a job left to a waiting job of a client that used less recently",
}
"""The dispatcher's counters that Prometheus gets, with their help texts."""
DISPATCHER_TOTALS = (
    "retries", "hedges", "hedge_wins", "tail_hedges", "waited_for_faster", "rescues", "deadlines",
    "fair_yields",
)  # fmt: skip
"""The dispatcher's counters in /status totals."""


NOT_OUTCOMES = ("connections", "accepted", "cache_hit", "pump")
"""Counters that are not how a job ended (each is exported on its own)."""


@dataclass
class Counters:
    connections: int = 0
    accepted: int = 0
    """Jobs the judge accepted and that went on to a backend or the cache (not an
    outcome: each then ends as one of those below)."""
    ok: int = 0
    compile_error: int = 0
    turned_away: int = 0
    """No backend had a free slot within the queue timeout: the client compiles locally."""
    no_compiler: int = 0
    """No backend in rotation runs the job's compiler (in the chosen identity): the
    client compiles locally, at once."""
    failed: int = 0
    """Every attempt failed: the client compiles locally."""
    reply_refused: int = 0
    """Compiled, but its reply could not be held for the client within --reply-memory-mb:
    not answered, the client compiles locally."""
    rejected_connections: int = 0
    """Closed at once: over --max-connections or --max-connections-per-address."""
    rejected_access: int = 0
    rejected_auth: int = 0
    """Failed the GSSAPI handshake or a principal list (with --auth)."""
    rejected_policy: int = 0
    """Refused by the argument judge: answered with the reason, never forwarded."""
    bad_request: int = 0
    client_disconnect: int = 0
    cache_hit: int = 0
    """Of the ok jobs, those answered from the result cache."""
    pump: int = 0
    """Of the accepted jobs, those in pump mode (protocol 3), sent to servers serving it."""


@dataclass
class BalancerStats:
    pool: Pool
    dispatcher: Dispatcher
    counters: Counters = field(default_factory=Counters)
    started_at: float = field(default_factory=time.time)
    bounds: dict[str, Callable[[], dict[str, int]]] = field(default_factory=dict)
    """What /status reports of the connection caps and the inflate budget."""
    activity: Activity = field(default_factory=Activity)
    """The dashboard's jobs in flight, history, clients and state changes."""
    viewers: Callable[[], int] = field(default=lambda: 0)
    """Live dashboard viewers now (set by the admin app)."""
    discovery: Callable[[], dict[str, dict[str, object]]] = field(default=lambda: {})
    """Per DNS source of backends, how asking it went (balancer/pool/discovery.py)."""
    version: str = field(default_factory=distlb_version)
    reload: ReloadStatus = field(default_factory=ReloadStatus)
    """How the config's last load went (the start counts as one)."""

    def __post_init__(self) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(self))
        self.job_seconds = Histogram(
            "distlb_balancer_job_seconds",
            "Request received to reply sent, by outcome",
            ["outcome"],
            buckets=JOB_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.queue_seconds = Histogram(
            "distlb_balancer_queue_seconds",
            "Waits for a backend with a free slot, of the jobs compiled",
            buckets=JOB_SECONDS_BUCKETS,
            registry=self.registry,
        )
        ProcessCollector(registry=self.registry)
        self._job_seconds_of: dict[str, Histogram] = {}

    def job_finished(
        self,
        outcome: str,
        seconds: float,
        live: LiveJob | None = None,
        *,
        backend: str | None = None,
        queued_s: float = 0.0,
        cached: bool = False,
        reason: str = "",
    ) -> None:
        setattr(self.counters, outcome, getattr(self.counters, outcome) + 1)
        by_outcome = self._job_seconds_of.get(outcome)
        if by_outcome is None:  # (a labels() lookup per job cost more than the observe)
            by_outcome = self._job_seconds_of[outcome] = self.job_seconds.labels(outcome)
        by_outcome.observe(seconds)
        if outcome in ("ok", "compile_error") and not cached:
            self.queue_seconds.observe(queued_s)
        client = ""  # (a job shown live is its client's; the log context is copied only
        if live is None:  # for one that ended before it was shown: a bad request)
            context = structlog.contextvars.get_contextvars()
            client = str(context.get("principal") or context.get("client") or "")
        self.activity.finish(
            live, outcome, seconds, backend=backend, queued_s=queued_s, cached=cached,
            reason=reason, client=client,
        )  # fmt: skip

    def reload_succeeded(self) -> None:
        """The config was reloaded (the reload code calls this)."""
        self.reload.succeeded()

    def reload_failed(self, reason: str) -> None:
        """A reload failed, for ``reason``: the config in use stays (the reload code
        calls this)."""
        self.reload.failed(reason)

    def sample(self) -> None:
        """Close one sample of the history (every ``history.sample_s``)."""
        cache = self.dispatcher.cache
        lookups = (cache.stats.hits + cache.stats.misses, cache.stats.hits) if cache else None
        self.activity.history.sample(
            list(self.pool.backends.values()), lookups, len(self.activity.live)
        )

    def status(self) -> dict[str, object]:
        now = time.monotonic()
        backends = [b.snapshot(now) for b in self.pool.backends.values()]
        compilers = self.pool.routing.describe(list(self.pool.backends.values()))
        for backend, b in zip(backends, self.pool.backends.values(), strict=True):
            backend["compilers"] = compilers.get(str(backend["name"]), {})
            backend.update(machine_of(b))
            backend["source"] = self.pool.sources.get(b.name, "static")
        return {
            "backends": backends,
            "totals": {
                **asdict(self.counters),
                **{name: getattr(self.dispatcher, name) for name in DISPATCHER_TOTALS},
                "slots": sum(b["slots"] for b in backends if b["state"] == "up"),
                "free": sum(b["free"] for b in backends if b["state"] == "up"),
                "in_flight": sum(b["in_flight"] for b in backends),
                "healthy_backends": self.pool.healthy_count(),
            },
            "cache": self.cache_status(),
            "shares": self.dispatcher.fair.status(),
            "discovery": self.discovery(),
            **{name: snapshot() for name, snapshot in self.bounds.items()},
            "uptime_s": round(time.time() - self.started_at, 3),
            "version": self.version,
            "reload": self.reload.status(),
        }

    def cache_status(self) -> dict[str, object] | None:
        cache = self.dispatcher.cache
        if cache is None:
            return None
        st = cache.stats

        def hit_ms(q: float) -> float | None:
            seconds = quantile(st.hit_seconds, q)
            return round(seconds * 1000, 2) if seconds is not None else None

        return {
            "stores": [store.name for store in cache.stores],
            "hits": st.hits,
            "misses": st.misses,
            "path_misses": st.path_misses,
            "unmappable": st.unmappable,
            "bypasses": st.bypasses,
            "corrupt": st.corrupt,
            "rejected": st.rejected,
            "stored": st.stores,
            "bytes_read": st.bytes_read,
            "bytes_written": st.bytes_written,
            "hit_p50_ms": hit_ms(0.5),
            "hit_p99_ms": hit_ms(0.99),
            "not_stored_unsandboxed": (
                self.dispatcher.caching.not_stored_unsandboxed if self.dispatcher.caching else 0
            ),
            "not_stored_changed": (
                self.dispatcher.caching.not_stored_changed if self.dispatcher.caching else 0
            ),
            "nodes": nodes_status(cache),
            "masters": cluster_masters(cache),
        }

    def prometheus(self) -> bytes:
        return generate_latest(self.registry)


class _Collector(Collector):
    def __init__(self, stats: BalancerStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self._stats
        jobs = CounterMetricFamily(
            "distlb_balancer_jobs", "Jobs by how they ended", labels=["outcome"]
        )
        for name, value in asdict(s.counters).items():
            if name not in NOT_OUTCOMES:
                jobs.add_metric([name], value)
        yield jobs
        yield CounterMetricFamily(
            "distlb_balancer_jobs_accepted",
            "Jobs the judge accepted, sent on to a backend or the cache (each ends in an outcome)",
            value=s.counters.accepted,
        )
        yield CounterMetricFamily(
            "distlb_balancer_connections", "Client connections", value=s.counters.connections
        )
        yield from self_families("balancer", s.version, s.reload)
        yield CounterMetricFamily(
            "distlb_balancer_cache_hits", "Jobs answered from the result cache",
            value=s.counters.cache_hit,
        )  # fmt: skip
        yield CounterMetricFamily(
            "distlb_balancer_pump_jobs", "Accepted jobs in pump mode", value=s.counters.pump
        )
        yield GaugeMetricFamily(
            "distlb_balancer_jobs_in_flight", "Jobs received and not yet answered",
            value=len(s.activity.live),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "distlb_balancer_dashboard_viewers", "Live dashboard viewers", value=s.viewers()
        )
        for name, what in DISPATCHER_METRICS.items():
            yield CounterMetricFamily(
                f"distlb_balancer_{name}", what, value=getattr(s.dispatcher, name)
            )
        per_backend = {
            "up": GaugeMetricFamily("distlb_backend_up", "1 while in rotation", labels=["backend"]),
            "slots": GaugeMetricFamily("distlb_backend_slots", "Slots", labels=["backend"]),
            "free": GaugeMetricFamily(
                "distlb_backend_free", "Estimated free slots", labels=["backend"]
            ),
            "in_flight": GaugeMetricFamily(
                "distlb_backend_in_flight", "Our jobs on it", labels=["backend"]
            ),
        }
        sent = CounterMetricFamily("distlb_backend_sent", "Jobs sent", labels=["backend"])
        probes = CounterMetricFamily(
            "distlb_backend_probes", "Health probe compiles sent (not jobs)", labels=["backend"]
        )
        failures = CounterMetricFamily(
            "distlb_backend_failures", "Failed probes, polls and jobs", labels=["backend"]
        )
        turned_away = CounterMetricFamily(
            "distlb_backend_turned_away", "Attempts it turned away (full)", labels=["backend"]
        )
        latency = GaugeMetricFamily(
            "distlb_backend_latency_seconds",
            "Its recent jobs' latency (the window the picker uses): p50 and p95",
            labels=["backend", "stat"],
        )
        for b in s.pool.backends.values():
            per_backend["up"].add_metric([b.name], int(b.healthy))
            per_backend["slots"].add_metric([b.name], b.slots)
            per_backend["free"].add_metric([b.name], b.free)
            per_backend["in_flight"].add_metric([b.name], b.in_flight)
            sent.add_metric([b.name], b.sent)
            probes.add_metric([b.name], b.probes)
            failures.add_metric([b.name], b.failures)
            turned_away.add_metric([b.name], b.turned_away)
            for q, stat in ((0.5, "p50"), (0.95, "p95")):
                value = b.latency_quantile(q)
                if value is not None:
                    latency.add_metric([b.name, stat], value)
        yield from per_backend.values()
        yield from share_families(s.dispatcher.fair.status())
        yield from machine_families(s.pool.backends.values())
        offered = GaugeMetricFamily(
            "distlb_backend_compiler",
            "1 for each compiler a backend runs; chosen: jobs for it go there",
            labels=["backend", "compiler", "version", "chosen"],
        )
        described = s.pool.routing.describe(list(s.pool.backends.values()))
        for backend_name, compilers in described.items():
            for compiler, info in compilers.items():
                labels = [backend_name, compiler, str(info["version"]), str(info["chosen"]).lower()]
                offered.add_metric(labels, 1)
        yield offered
        cache = s.dispatcher.cache
        if cache is not None:
            lookups = CounterMetricFamily(
                "distlb_cache_lookups", "Result cache lookups", labels=["result"]
            )
            lookups.add_metric(["hit"], cache.stats.hits)
            lookups.add_metric(["miss"], cache.stats.misses)
            yield lookups
            yield CounterMetricFamily(
                "distlb_cache_bypasses",
                "Cache operations skipped: a store was down or slow",
                value=cache.stats.bypasses,
            )
            yield CounterMetricFamily(
                "distlb_cache_path_misses",
                "Misses whose job differs from a stored entry's only by the paths it names "
                "(what sharing across checkouts would gain)",
                value=cache.stats.path_misses,
            )
            yield CounterMetricFamily(
                "distlb_cache_unmappable",
                "Entries found but not served: their warnings could not be made to name the "
                "requester's files",
                value=cache.stats.unmappable,
            )
            yield CounterMetricFamily(
                "distlb_cache_corrupt", "Corrupt entries ignored", value=cache.stats.corrupt
            )
            yield CounterMetricFamily(
                "distlb_cache_rejected",
                "Entries ignored: not made with this farm's cache secret (forged, moved or old)",
                value=cache.stats.rejected,
            )
            yield CounterMetricFamily(
                "distlb_cache_read_bytes",
                "Bytes served from the cache",
                value=cache.stats.bytes_read,
            )
            yield CounterMetricFamily(
                "distlb_cache_written_bytes", "Bytes stored", value=cache.stats.bytes_written
            )
            yield from node_families(cache)
        yield sent
        yield probes
        yield failures
        yield turned_away
        yield latency
