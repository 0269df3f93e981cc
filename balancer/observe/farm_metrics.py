"""What the farm's sharing looks like, for /status and the metrics: per client share
(fair share: balancer/routing/fair.py), and per backend what its machine has free (the
slots a distlb server offers of those it has, its foreign load and memory:
server/machine.py)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from balancer.routing.backend import Backend

SHARE_GAUGES = {
    "weight": "Its weight (--fair-groups; 1 for a client in no group)",
    "recent_s": "Its recent compile time (decaying over --fair-memory), running jobs' "
    "time so far included",
    "running": "Its jobs holding slots now",
    "waiting": "Its jobs waiting for a slot now",
}


def share_families(shares: list[dict[str, object]]) -> Iterator[Metric]:
    """Per share of the farm (a client, or its group): balancer/routing/fair.py."""
    gauges = {
        key: GaugeMetricFamily(
            f"distlb_balancer_share_{key.replace('_s', '_seconds')}", what, labels=["share"]
        )
        for key, what in SHARE_GAUGES.items()
    }
    jobs = CounterMetricFamily(
        "distlb_balancer_share_jobs", "Its jobs sent to backends", labels=["share"]
    )
    queued = CounterMetricFamily(
        "distlb_balancer_share_queued_seconds",
        "Time its jobs waited for slots, in all (over jobs: the mean queue time)",
        labels=["share"],
    )
    for share in shares:
        name = str(share["name"])
        for key, family in gauges.items():
            family.add_metric([name], float(share[key]))  # type: ignore[arg-type]
        jobs.add_metric([name], float(share["jobs"]))  # type: ignore[arg-type]
        queued.add_metric([name], float(share["queued_s"]))  # type: ignore[arg-type]
    yield from gauges.values()
    yield jobs
    yield queued


def machine_of(backend: Backend) -> dict[str, object]:
    """A backend's slots configured (when it offers fewer: its report's ``slots`` is what
    it offers) and its machine's figures, from its last report (None: not reported)."""
    report = backend.report
    machine = report.machine if report is not None and report.machine else {}
    return {
        "configured_slots": report.configured_slots if report is not None else None,
        "foreign_load": machine.get("foreign_load"),
        "mem_available_mb": machine.get("mem_available_mb"),
    }


def machine_families(backends: Iterable[Backend]) -> Iterator[Metric]:
    """Per backend: the slots it is configured with, its foreign load, its free memory."""
    configured = GaugeMetricFamily(
        "distlb_backend_configured_slots",
        "Slots a distlb server is configured with (distlb_backend_slots: those it offers now)",
        labels=["backend"],
    )
    foreign = GaugeMetricFamily(
        "distlb_backend_foreign_load",
        "Runnable tasks on its machine that are not the server's, as it reports them",
        labels=["backend"],
    )
    memory = GaugeMetricFamily(
        "distlb_backend_memory_available_bytes",
        "Its machine's available memory (MemAvailable), as it reports it",
        labels=["backend"],
    )
    for backend in backends:
        figures = machine_of(backend)
        if figures["configured_slots"] is not None:
            configured.add_metric([backend.name], float(figures["configured_slots"]))  # type: ignore[arg-type]
        if figures["foreign_load"] is not None:
            foreign.add_metric([backend.name], float(figures["foreign_load"]))  # type: ignore[arg-type]
        if figures["mem_available_mb"] is not None:
            memory.add_metric([backend.name], float(figures["mem_available_mb"]) * 1024 * 1024)  # type: ignore[arg-type]
    yield configured
    yield foreign
    yield memory
