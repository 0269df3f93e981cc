"""What the server counts, and the three faces of it: JSON, Prometheus, distccd --stats text."""

from __future__ import annotations

import os
import resource
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from cache import CacheStats
from client.cli import distlb_version
from daemon.self_report import ReloadStatus, self_families
from server.activity import ServerActivity
from server.machine import MachineLoad, mem_available_mb
from server.runner import LIMITS
from server.slots import Slots

JOB_SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1200)
_MINUTE_BUCKETS = 15
NOT_OUTCOMES = ("connections", "accepted", "cache_hit", "pump")
"""Counters that are not how a job ended (each is exported on its own)."""
PROBE_OUTCOMES = ("ok", "compile_error", "rejected_busy", "rejected_policy", "timeout",
                  "client_disconnect")  # fmt: skip
"""How a health probe's compile can end (each exported from 0)."""


@dataclass
class Counters:
    """Monotonic counts of what happened to connections and jobs."""

    connections: int = 0
    accepted: int = 0
    """Jobs that got a slot (not an outcome: each then ends as one of those below)."""
    ok: int = 0
    compile_error: int = 0
    rejected_busy: int = 0
    rejected_connections: int = 0
    """Closed at once: over --max-connections or --max-connections-per-address."""
    rejected_access: int = 0
    rejected_auth: int = 0
    """Failed the GSSAPI handshake or a principal list (with --auth)."""
    rejected_policy: int = 0
    timeout: int = 0
    client_disconnect: int = 0
    bad_request: int = 0
    other: int = 0
    cache_hit: int = 0
    """Of the ok jobs, those answered from the local disk cache."""
    pump: int = 0
    """Of the accepted jobs, those in pump mode (protocol 3: preprocessed here)."""


@dataclass
class LongestJob:
    name: str = "none"
    compiler: str = "none"
    ms: int = -1


@dataclass
class ServerStats:
    """Counters plus the slot view, kept current by the job handlers."""

    slots: Slots
    tmp_dir: str
    counters: Counters = field(default_factory=Counters)
    longest: LongestJob = field(default_factory=LongestJob)
    started_at: float = field(default_factory=time.time)
    result_cache: bool = False
    """Whether this server keeps a local result cache (balancers route repeats to it)."""
    cache_stats: CacheStats | None = None
    """The local cache's counts (with --cache-dir)."""
    sandbox: dict[str, object] = field(default_factory=dict)
    """What the sandbox is (server/sandbox/launcher.py ``describe``), for /status."""
    limits_hit: dict[str, int] = field(default_factory=dict)
    bounds: dict[str, Callable[[], dict[str, int]]] = field(default_factory=dict)
    """What /status reports of the connection caps and the inflate budget."""
    """Jobs stopped by a resource bound, by bound (memory, file_size, ...)."""
    busy_avg: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    activity: ServerActivity = field(default_factory=ServerActivity)
    """The running jobs and the last hour, for /dashboard."""
    machine: MachineLoad = field(default_factory=MachineLoad)
    """What the machine has free, as last sampled (server/machine.py)."""
    probes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PROBE_OUTCOMES, 0))
    """Health probes' compiles (client/prober.py's request) by outcome: not jobs."""
    version: str = field(default_factory=distlb_version)
    reload: ReloadStatus = field(default_factory=ReloadStatus)
    """How the config's last load went (the start counts as one)."""
    # Completed compiles per minute, newest last, for dcc_num_compiles1/2/3.
    _per_minute: deque[tuple[int, int]] = field(default_factory=lambda: deque(maxlen=16))

    def __post_init__(self) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_StatsCollector(self))
        self.job_seconds = Histogram(
            "distlb_server_job_seconds",
            "Time from admission to reply, by outcome",
            ["outcome"],
            buckets=JOB_SECONDS_BUCKETS,
            registry=self.registry,
        )
        ProcessCollector(registry=self.registry)

    def job_finished(
        self, outcome: str, name: str, compiler: str, seconds: float, *, probe: bool = False
    ) -> None:
        """Count one admitted job's end. ``outcome`` names a field of :class:`Counters`.
        A ``probe`` is counted apart, in :attr:`probes`, and nowhere else."""
        if probe:
            self.probes[outcome] = self.probes.get(outcome, 0) + 1
            return
        setattr(self.counters, outcome, getattr(self.counters, outcome) + 1)
        self.job_seconds.labels(outcome).observe(seconds)
        self.activity.job(outcome, seconds)
        if outcome in ("ok", "compile_error"):
            minute = int(time.monotonic() // 60)
            if self._per_minute and self._per_minute[-1][0] == minute:
                self._per_minute[-1] = (minute, self._per_minute[-1][1] + 1)
            else:
                self._per_minute.append((minute, 1))
        ms = int(seconds * 1000)
        if ms > self.longest.ms and outcome == "ok":
            self.longest = LongestJob(name=name, compiler=compiler, ms=ms)

    def reload_succeeded(self) -> None:
        """The config was reloaded (the reload code calls this)."""
        self.reload.succeeded()

    def reload_failed(self, reason: str) -> None:
        """A reload failed, for ``reason``: the config in use stays (the reload code
        calls this)."""
        self.reload.failed(reason)

    def limit_hit(self, limit: str) -> None:
        self.limits_hit[limit] = self.limits_hit.get(limit, 0) + 1

    def sample_load(self, interval_s: float) -> None:
        """Fold the busy count into 1/5/15-minute moving averages (called periodically)."""
        self.activity.sample(self.slots.busy, self.slots.capacity)
        for i, window_s in enumerate((60.0, 300.0, 900.0)):
            alpha = min(1.0, interval_s / window_s)
            self.busy_avg[i] += alpha * (self.slots.busy - self.busy_avg[i])

    def compiles_in_last(self, minutes: int) -> int:
        now = int(time.monotonic() // 60)
        return sum(n for minute, n in self._per_minute if now - minute < minutes)

    def status(self, compilers: dict[str, dict[str, str]], version: str) -> dict[str, object]:
        return {
            "slots": self.slots.capacity,
            "offered": self.slots.offered,
            "machine": self.machine.describe(),
            "busy": self.slots.busy,
            "busy_max": self.slots.busy_max,
            "holders": self.slots.holders,
            "free": self.slots.free,
            "accepting": self.slots.accepting,
            "counters": asdict(self.counters),
            "probes": dict(self.probes),
            "compilers": compilers,
            "result_cache": self.result_cache,
            "cache": self._cache_status(),
            "sandbox": self.sandbox,
            "limits_hit": dict(self.limits_hit),
            **{name: snapshot() for name, snapshot in self.bounds.items()},
            "uptime_s": round(time.time() - self.started_at, 3),
            "version": version,
            "reload": self.reload.status(),
        }

    def _cache_status(self) -> dict[str, int] | None:
        """The local cache's lookups and the entries it refused (None: no cache)."""
        st = self.cache_stats
        if st is None:
            return None
        return {"hits": st.hits, "misses": st.misses, "path_misses": st.path_misses,
                "unmappable": st.unmappable, "corrupt": st.corrupt, "rejected": st.rejected,
                "stored": st.stores}  # fmt: skip

    def prometheus(self) -> bytes:
        return generate_latest(self.registry)

    def distccd_text(self) -> str:
        """The body of ``distccd --stats``: same fields, same order, same format."""
        c = self.counters
        load = os.getloadavg()
        max_rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        lines = [
            # Tools that read distccd's page expect this first line as distccd writes it.
            "argv /distccd",
            "<distccstats>",
            f"dcc_tcp_accept {c.connections}",
            f"dcc_rej_bad_req {c.bad_request + c.rejected_policy + c.rejected_access + c.rejected_auth}",  # noqa: E501
            f"dcc_rej_overload {c.rejected_busy}",
            f"dcc_compile_ok {c.ok}",
            f"dcc_compile_error {c.compile_error}",
            f"dcc_compile_timeout {c.timeout}",
            f"dcc_cli_disconnect {c.client_disconnect}",
            f"dcc_other {c.other}",
            f"dcc_longest_job {page_text(self.longest.name)}",
            f"dcc_longest_job_compiler {page_text(self.longest.compiler)}",
            f"dcc_longest_job_time_msecs {self.longest.ms}",
            f"dcc_max_kids {self.slots.capacity}",
            *(f"dcc_avg_kids{i + 1} {round(v)}" for i, v in enumerate(self.busy_avg)),
            f"dcc_current_load {self.slots.busy}",
            *(f"dcc_load{i + 1} {v:1.2f}" for i, v in enumerate(load)),
            f"dcc_num_compiles1 {self.compiles_in_last(1)}",
            f"dcc_num_compiles2 {self.compiles_in_last(5)}",
            f"dcc_num_compiles3 {self.compiles_in_last(15)}",
            "dcc_num_procstate_D 0",
            f"dcc_max_RSS {max_rss_kb}",
            "dcc_max_RSS_name (none)",
            "dcc_io_rate 0",
            f"dcc_free_space {_free_space_mb(self.tmp_dir)} MB",
            f"dcc_free_mem {mem_available_mb() or 0} MB",
            "</distccstats>",
        ]
        return "\n".join(lines) + "\n"


PAGE_TEXT_CHARS = 1024
"""How much of a name the distccd page shows (distccd's own ``MAX_FILENAME_LEN``)."""


def page_text(name: str) -> str:
    """A client's name as the distccd page shows it: on one line, whatever it holds.
    What is not printable (a newline would forge lines of the page's own), a byte that
    was not UTF-8 (argv is decoded with surrogateescape, and such a name could not be
    encoded: the page answered 500) and a backslash are written ``\\xNN`` (``\\uNNNN``
    above 0xff); the name is cut at :data:`PAGE_TEXT_CHARS` characters."""
    shown = []
    for char in name[:PAGE_TEXT_CHARS]:
        code = ord(char)
        if char.isprintable() and char != "\\":
            shown.append(char)
        elif 0xDC80 <= code <= 0xDCFF:  # a byte surrogateescape kept
            shown.append(f"\\x{code - 0xDC00:02x}")
        else:
            shown.append(f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}")
    return "".join(shown)


def _free_space_mb(path: str) -> int:
    try:
        return shutil.disk_usage(path).free // (1024 * 1024)
    except OSError:
        return 0


class _StatsCollector(Collector):
    """Exports the live counters and slots at scrape time (no double bookkeeping)."""

    def __init__(self, stats: ServerStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        s = self._stats
        jobs = CounterMetricFamily(
            "distlb_server_jobs", "Connections by how they ended (not probes)", labels=["outcome"]
        )
        for name, value in asdict(s.counters).items():
            if name not in NOT_OUTCOMES:
                jobs.add_metric([name], value)
        yield jobs
        yield CounterMetricFamily(
            "distlb_server_jobs_accepted", "Jobs that got a slot (each ends in an outcome)",
            value=s.counters.accepted,
        )  # fmt: skip
        probes = CounterMetricFamily(
            "distlb_server_probes", "Health probes' compiles by how they ended", labels=["outcome"]
        )
        for name, value in s.probes.items():
            probes.add_metric([name], value)
        yield probes
        yield CounterMetricFamily(
            "distlb_server_connections", "TCP connections accepted", value=s.counters.connections
        )
        yield CounterMetricFamily(
            "distlb_server_pump_jobs", "Accepted jobs in pump mode", value=s.counters.pump
        )
        yield from self_families("server", s.version, s.reload)
        limits = CounterMetricFamily(
            "distlb_server_job_limits", "Jobs stopped by a resource bound", labels=["limit"]
        )
        for limit in sorted(set(LIMITS) | set(s.limits_hit)):  # (each, from 0)
            limits.add_metric([limit], s.limits_hit.get(limit, 0))
        yield limits
        if s.cache_stats is not None:
            yield from _cache_families(s.cache_stats)
        yield GaugeMetricFamily(
            "distlb_server_sandboxed",
            "1 when compiles run sandboxed (--sandbox bwrap)",
            value=int(s.sandbox.get("mode") == "bwrap"),
        )
        yield GaugeMetricFamily("distlb_server_slots", "Job slots", value=s.slots.capacity)
        yield GaugeMetricFamily("distlb_server_slots_busy", "Busy job slots", value=s.slots.busy)
        yield GaugeMetricFamily("distlb_server_slots_free", "Free job slots", value=s.slots.free)
        yield GaugeMetricFamily(
            "distlb_server_slots_offered",
            "Job slots offered now: fewer while the machine is busy with other work or short "
            "of memory (--offer-by-load)",
            value=s.slots.offered,
        )
        machine = s.machine.describe()
        yield GaugeMetricFamily(
            "distlb_server_foreign_load",
            "The machine's runnable tasks that are not the server's or its jobs', smoothed",
            value=float(machine["foreign_load"]),  # type: ignore[arg-type]
        )
        if machine["mem_available_mb"] is not None:
            yield GaugeMetricFamily(
                "distlb_server_memory_available_bytes", "The machine's MemAvailable",
                value=int(machine["mem_available_mb"]) * 1024 * 1024,  # type: ignore[call-overload]
            )  # fmt: skip
        pressure = GaugeMetricFamily(
            "distlb_server_pressure_percent",
            "The kernel's pressure stall figures (PSI, avg10): cpu some, memory full",
            labels=["resource"],
        )
        for kind in ("cpu", "memory"):
            value = machine[f"{kind}_pressure"]
            if value is not None:
                pressure.add_metric([kind], float(value))  # type: ignore[arg-type]
        yield pressure
        yield GaugeMetricFamily(
            "distlb_server_accepting",
            "1 while the server takes new jobs",
            value=int(s.slots.accepting),
        )


SERVER_CACHE_COUNTS = {
    "hits": "Lookups in the disk cache that found the result (jobs answered without a compile)",
    "misses": "Lookups in the disk cache that found nothing usable",
    "corrupt": "Entries not served: damaged (a miss)",
    "rejected": "Entries not served: not made with this server's cache secret (a miss)",
    "stores": "Results stored",
    "path_misses": "Misses whose job differs from a stored entry's only by the paths it names",
    "unmappable": "Entries found but not served: their warnings could not name the "
    "requester's files",
}
"""The disk cache's counts (--cache-dir), as distlb_server_cache_NAME_total."""


def _cache_families(stats: CacheStats) -> Iterator[CounterMetricFamily]:
    for name, what in SERVER_CACHE_COUNTS.items():
        yield CounterMetricFamily(f"distlb_server_cache_{name}", what, value=getattr(stats, name))
