"""``--workers N``: N processes behind one distcc port, seen from outside as one balancer.

The supervisor (the process started) binds N listening sockets to the port with
``SO_REUSEPORT`` (the kernel spreads connections over them), makes the memory the
workers share (:mod:`balancer.workers.shared`), and forks the workers before any event loop
or thread exists. Each worker is a whole balancer (its own reports, probes, queue and
cache connections) on its own socket, counting in the shared memory what it holds on
each backend. Worker 0 serves the admin port; the others serve theirs on a Unix
socket in a directory only this user may enter, and worker 0 merges their /status and
/metrics into its own, so the dashboard, scrapers and keepalived see one balancer.

The supervisor forwards SIGTERM, SIGINT and SIGHUP to every worker. On SIGHUP it first
reads the config itself and writes what the workers are to apply, the config in force
and whether the reload was refused, to one snapshot (``config.json`` beside the admin
sockets); every worker reloads from that snapshot, so all apply the same config, or
all refuse it; a worker started again later starts from it too. A worker that dies
is started again on the same socket (connections queued there wait for it), unless
it exited with an error within :data:`EARLY_EXIT_S` of its start, which ends the
balancer (a worker that cannot start will not start the next time either).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import structlog
from prometheus_client.parser import text_string_to_metric_families

from balancer.workers.shared import SharedCounts

log = structlog.get_logger("distlb.balancer.workers")

EARLY_EXIT_S = 5.0
SNAPSHOT = "config.json"
"""The config the workers reload from (in their directory)."""
PEER_TIMEOUT_S = 2.0
"""How long worker 0 waits for another worker's /status or /metrics."""
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@dataclass
class WorkerPlace:
    """Where one worker stands among the others."""

    index: int
    count: int
    sock: socket.socket
    """Its listening socket (one of the SO_REUSEPORT group)."""
    shared: SharedCounts
    peers_dir: str

    @property
    def snapshot(self) -> str:
        """Where the supervisor writes the config the workers reload from."""
        return os.path.join(self.peers_dir, SNAPSHOT)

    def admin_socket(self, index: int) -> str:
        return os.path.join(self.peers_dir, f"worker-{index}.sock")

    @property
    def peers(self) -> list[str]:
        """The admin sockets of the other workers (for worker 0 to merge)."""
        return [self.admin_socket(i) for i in range(1, self.count)] if self.index == 0 else []


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` sockets listening on one address and port (0: the first picks one)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            address = (address[0], sock.getsockname()[1], *address[2:])
            sock.listen(1024)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def supervise(
    host: str,
    port: int,
    count: int,
    run_worker: Callable[[WorkerPlace], int],
    reload: Callable[[str], None] | None = None,
) -> int:
    """Start ``count`` workers, each ``run_worker(place)`` in a forked process (its
    return value is the worker's exit status); return the balancer's exit status.
    ``reload(snapshot_path)`` runs on SIGHUP, before the workers hear of it."""
    try:
        sockets = listening_sockets(host, port, count)
    except OSError as exc:
        log.error("startup_failed", reason=str(exc))
        return 1
    shared = SharedCounts(count)
    peers_dir = tempfile.mkdtemp(prefix="distlb-balancer-")  # 0700
    children: dict[int, tuple[int, float]] = {}
    stopping = False

    def spawn(index: int) -> None:
        # No forwarded signal may land between the fork and the child's own handlers
        # (nor before the parent knows the child's pid).
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
        pid = os.fork()
        if pid == 0:  # the worker
            status = 1
            try:
                # A SIGHUP before the worker's loop takes it would end the worker.
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                for signum in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(signum, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
                for other, sock in enumerate(sockets):
                    if other != index:
                        sock.close()
                shared.become(index)
                structlog.contextvars.bind_contextvars(worker=index)
                status = run_worker(WorkerPlace(index, count, sockets[index], shared, peers_dir))
            except BaseException:
                log.exception("worker_crashed", worker=index)
            finally:
                os._exit(status)
        children[pid] = (index, time.monotonic())
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if signum == signal.SIGHUP and reload is not None and not stopping:
            reload(os.path.join(peers_dir, SNAPSHOT))
        if signum != signal.SIGHUP and not stopping:
            stopping = True
            for sock in sockets:  # new connections are refused, not queued for nobody
                sock.close()
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):  # (reaped, not yet forgotten)
                os.kill(pid, signum)

    for signum in FORWARDED:
        signal.signal(signum, forward)
    for index in range(count):
        spawn(index)
    log.info("workers_started", workers=count, pids=list(children),
             port=sockets[0].getsockname()[1])  # fmt: skip
    status = 0
    while children:
        try:
            pid, wait_status = os.wait()
        except ChildProcessError:
            break
        if pid not in children:
            continue
        index, started = children.pop(pid)
        code = os.waitstatus_to_exitcode(wait_status)
        if stopping:
            status = status or (code if code > 0 else 0)
            continue
        shared.forget(index)
        if code > 0 and time.monotonic() - started < EARLY_EXIT_S:
            log.error("worker_failed_at_start", worker=index, exit=code)
            status = code if code > 0 else 1
            forward(signal.SIGTERM, None)
            continue
        log.error("worker_exited", worker=index, exit=code, restarting=True)
        spawn(index)
    shutil.rmtree(peers_dir, ignore_errors=True)
    log.info("workers_stopped", exit=status)
    return status


# --- one balancer on the admin port --------------------------------------------

TOTALS_AS_SEEN = frozenset({"slots", "free", "healthy_backends"})
"""Totals every worker sees alike (from the backends' reports and the shared counts)."""
BACKEND_SUMS = ("in_flight", "probing", "probes", "sent", "ok", "failures", "turned_away")
CACHE_SUMS = ("hits", "misses", "path_misses", "unmappable", "bypasses", "corrupt", "rejected",
              "stored", "bytes_read", "bytes_written", "not_stored_unsandboxed")  # fmt: skip
CACHE_NODE_SUMS = ("hits", "misses", "bypasses")
BOUND_SUMS = {
    "connections": ("open", "addresses"),
    "inflating": ("bytes", "waiting", "waited"),
    "request_memory": ("bytes", "waiting", "waited"),
    "reply_memory": ("bytes", "refused"),
}
"""Each worker's own budgets, added up (each has its own bound: per worker, not shared;
the admin port's connections are the first worker's)."""
GAUGES_SUMMED = frozenset(
    {
        "distlb_backend_in_flight", "distlb_balancer_jobs_in_flight",
        "distlb_balancer_dashboard_viewers", "process_resident_memory_bytes", "process_open_fds",
    }
)  # fmt: skip
"""Gauges that count each worker's own (the others are alike in every worker)."""
GAUGES_LOWEST = frozenset(
    {"distlb_config_last_reload_successful", "distlb_config_last_reload_success_timestamp_seconds"}
)
"""Gauges where the balancer is as good as its worst worker: each reloads on its own, so
one whose reload failed makes it 0, and the oldest success is the config's age."""


def _add(into: dict[str, Any], other: dict[str, Any], keys: Iterable[str]) -> None:
    for key in keys:
        if isinstance(into.get(key), int | float) and isinstance(other.get(key), int | float):
            into[key] += other[key]


def _merge_nodes(mine: list[dict[str, Any]], other: object) -> list[dict[str, Any]]:
    """Per Redis node, every worker's counts added (the quantiles stay the first's that
    has the node: quantiles do not add up)."""
    nodes = {n["node"]: dict(n) for n in mine}
    for node in other if isinstance(other, list) else []:
        if node.get("node") in nodes:
            _add(nodes[node["node"]], node, CACHE_NODE_SUMS)
        elif isinstance(node.get("node"), str):
            nodes[node["node"]] = dict(node)
    return [nodes[name] for name in sorted(nodes)]


def merge_status(mine: dict[str, Any], others: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Worker 0's /status with the other workers' counts added (None: that worker did
    not answer; ``workers`` says so)."""
    merged = dict(mine)
    totals = dict(mine["totals"])
    backends = {b["name"]: dict(b) for b in mine["backends"]}
    cache = dict(mine["cache"]) if mine.get("cache") else None
    bounds = {name: dict(mine[name]) for name in BOUND_SUMS if isinstance(mine.get(name), dict)}
    for other in others:
        if other is None:
            continue
        _add(totals, other["totals"], (k for k in totals if k not in TOTALS_AS_SEEN))
        for backend in other["backends"]:
            if backend["name"] in backends:
                _add(backends[backend["name"]], backend, BACKEND_SUMS)
        if cache is not None and other.get("cache"):
            _add(cache, other["cache"], CACHE_SUMS)
            cache["nodes"] = _merge_nodes(cache.get("nodes") or [], other["cache"].get("nodes"))
        for name, keys in BOUND_SUMS.items():
            if name in bounds and isinstance(other.get(name), dict):
                _add(bounds[name], other[name], keys)
        reload = other.get("reload")
        if isinstance(reload, dict) and reload.get("successful") is False:
            merged["reload"] = reload  # (a worker whose reload failed speaks for all)
    merged.update(totals=totals, backends=list(backends.values()), cache=cache, **bounds)
    merged["workers"] = {
        "count": 1 + len(others),
        "answered": 1 + sum(1 for other in others if other is not None),
    }
    return merged


def merge_metrics(mine: str, others: list[str]) -> str:
    """Worker 0's Prometheus text with the other workers' counters, histograms and
    own-count gauges added, sample by sample, and the lowest of the reload gauges;
    the other gauges (build info, backends' state) are worker 0's."""
    families: dict[str, Any] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for number, text in enumerate([mine, *others]):
        for family in text_string_to_metric_families(text):
            families.setdefault(family.name, family)
            samples = values.setdefault(family.name, {})
            summed = family.type in ("counter", "histogram") or family.name in GAUGES_SUMMED
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if number == 0:
                    samples[key] = sample.value
                elif key in samples and family.name in GAUGES_LOWEST:
                    samples[key] = min(samples[key], sample.value)
                elif key in samples and summed and not sample.name.endswith("_created"):
                    samples[key] += sample.value
    lines = []
    for name, family in families.items():
        # As prometheus_client writes them: a counter's family is named with _total.
        shown = f"{name}_total" if family.type == "counter" else name
        lines.append(f"# HELP {shown} {_escape_help(family.documentation)}")
        lines.append(f"# TYPE {shown} {family.type}")
        for (sample_name, labels), value in values[name].items():
            rendered = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels)
            labelled = f"{sample_name}{{{rendered}}}" if labels else sample_name
            lines.append(f"{labelled} {_number(value)}")
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    if value != value:  # NaN
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
