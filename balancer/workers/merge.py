"""One balancer on the admin port, from ``--workers N``: each worker's ``/status`` and
``/metrics`` merged into one (worker 0 asks the others over their Unix sockets).

What lives here: which figures add up, which every worker sees alike, and which take
the lowest; pure functions over what the workers answered. What must not: asking them
(``balancer/observe/admin.py``) or running them (``supervisor.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

TOTALS_AS_SEEN = frozenset({"slots", "free", "healthy_backends"})
"""Totals every worker sees alike (from the backends' reports and the shared counts)."""
BACKEND_SUMS = ("in_flight", "probing", "probes", "sent", "ok", "failures", "turned_away")
CACHE_SUMS = ("hits", "misses", "path_misses", "unmappable", "bypasses", "corrupt", "rejected",
              "stored", "bytes_read", "bytes_written", "not_stored_unsandboxed",
              "not_stored_changed")  # fmt: skip
CACHE_NODE_SUMS = ("hits", "misses", "bypasses")
SHARE_SUMS = ("jobs", "queued_s")
"""Per share, the counts each worker keeps (its uses are in the workers' shared memory)."""
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
    shares = {s["name"]: dict(s) for s in mine.get("shares") or []}
    for other in others:
        for share in (other or {}).get("shares") or []:
            if share.get("name") in shares:  # (the uses are shared; the queue counts not)
                _add(shares[share["name"]], share, SHARE_SUMS)
    merged.update(totals=totals, backends=list(backends.values()), cache=cache, **bounds)
    if "shares" in mine:
        merged["shares"] = list(shares.values())
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
