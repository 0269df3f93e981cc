"""The last hour, in memory: a ring of samples for the farm every few seconds and, more
coarsely, one per backend. Fixed size (columns of doubles), no database: an hour of
the farm is 1,800 rows of 16 numbers, an hour of a backend 360 rows of 10.

Each sample holds what happened since the previous one (jobs by outcome, latency and
queue-wait quantiles of the jobs that ended, cache lookups) and what was true at its
time (slots in use, slots). Times are aligned to the sample period, so several
workers' rings line up (:func:`merge_exports`)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from balancer.routing.backend import Backend
from daemon.ring import Ring, quantile_ms

SAMPLE_S = 2.0
SAMPLES = 1800
BACKEND_EVERY = 5
"""A backend's row every this many farm samples (10 s)."""
MAX_LATENCIES = 4096
"""Latencies kept per sample for its quantiles (the first ones of a busier sample)."""

OUTCOMES = ("ok", "cache_hit", "compile_error", "failed", "turned_away", "refused")
"""The chart's outcomes: ok is compiled by a backend, cache_hit answered from the cache;
failed also counts no_compiler and bad requests; refused is the argument judge's."""
_OUTCOME_OF = {
    "ok": "ok", "compile_error": "compile_error", "failed": "failed",
    "no_compiler": "failed", "bad_request": "failed", "turned_away": "turned_away",
    "reply_refused": "turned_away",
    "rejected_policy": "refused",
}  # fmt: skip
TOTAL_COLUMNS = (
    "t", *OUTCOMES, "slots_used", "slots", "in_flight", "p50_ms", "p95_ms",
    "queue_p50_ms", "queue_p95_ms", "cache_lookups", "cache_hits",
)  # fmt: skip
BACKEND_COLUMNS = (
    "t", "up", "ok", "compile_error", "failures", "turned_away", "slots_used", "slots",
    "p50_ms", "p95_ms",
)  # fmt: skip
_GAUGES = ("up", "slots_used", "slots", "in_flight")
_QUANTILES = ("p50_ms", "p95_ms", "queue_p50_ms", "queue_p95_ms")


@dataclass
class _Interval:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    latencies: list[float] = field(default_factory=list)
    queued: list[float] = field(default_factory=list)


@dataclass
class _BackendInterval:
    ok: int = 0
    compile_error: int = 0
    latencies: list[float] = field(default_factory=list)
    failures_before: int = -1
    turned_away_before: int = -1


class History:
    def __init__(
        self, sample_s: float = SAMPLE_S, samples: int = SAMPLES, backend_every: int = BACKEND_EVERY
    ) -> None:
        self.sample_s = sample_s
        self.backend_every = backend_every
        self.total = Ring(TOTAL_COLUMNS, samples)
        self.backends: dict[str, Ring] = {}
        self._backend_samples = max(1, samples // backend_every)
        self._interval = _Interval()
        self._per_backend: dict[str, _BackendInterval] = {}
        self._ticks = 0
        self._cache_before: tuple[int, int] | None = None

    def job(
        self,
        outcome: str,
        seconds: float,
        *,
        backend: str | None = None,
        queued_s: float = 0.0,
        cached: bool = False,
    ) -> None:
        name = "cache_hit" if cached else _OUTCOME_OF.get(outcome)
        if name is None:
            return  # (a client that left, a refused connection: not a job's end)
        interval = self._interval
        interval.counts[name] += 1
        if name in ("ok", "compile_error") and len(interval.latencies) < MAX_LATENCIES:
            interval.latencies.append(seconds)
            interval.queued.append(queued_s)
        if backend is not None and not cached and name in ("ok", "compile_error"):
            per = self._per_backend.setdefault(backend, _BackendInterval())
            setattr(per, name, getattr(per, name) + 1)
            if len(per.latencies) < MAX_LATENCIES:
                per.latencies.append(seconds)

    def sample(
        self,
        backends: Sequence[Backend],
        cache: tuple[int, int] | None = None,
        in_flight: int = 0,
        now: float | None = None,
    ) -> dict[str, float]:
        """Close the current sample: a farm row now, a row per backend every
        ``backend_every`` samples. ``cache``: lookups and hits so far."""
        now = time.time() if now is None else now
        t = round(now / self.sample_s) * self.sample_s
        interval, self._interval = self._interval, _Interval()
        up = [b for b in backends if b.healthy]
        row: dict[str, float] = {"t": t, **interval.counts}
        row["slots"] = sum(b.slots for b in up)
        row["slots_used"] = sum(b.slots - b.free for b in up)
        row["in_flight"] = in_flight
        row["p50_ms"] = quantile_ms(interval.latencies, 0.5)
        row["p95_ms"] = quantile_ms(interval.latencies, 0.95)
        row["queue_p50_ms"] = quantile_ms(interval.queued, 0.5)
        row["queue_p95_ms"] = quantile_ms(interval.queued, 0.95)
        if cache is not None:
            before = self._cache_before or cache
            row["cache_lookups"], row["cache_hits"] = cache[0] - before[0], cache[1] - before[1]
            self._cache_before = cache
        self.total.append(row)
        self._ticks += 1
        if self._ticks % self.backend_every == 0 or self._ticks == 1:
            self._sample_backends(backends, t)
        return row

    def _sample_backends(self, backends: Sequence[Backend], t: float) -> None:
        names = {b.name for b in backends}
        for gone in set(self.backends) - names:  # (removed by a reload)
            del self.backends[gone]
            self._per_backend.pop(gone, None)
        for b in backends:
            per = self._per_backend.pop(b.name, None) or _BackendInterval()
            fresh = _BackendInterval(failures_before=b.failures, turned_away_before=b.turned_away)
            self._per_backend[b.name] = fresh
            failures = b.failures - per.failures_before if per.failures_before >= 0 else 0
            turned = b.turned_away - per.turned_away_before if per.turned_away_before >= 0 else 0
            ring = self.backends.get(b.name)
            if ring is None:
                ring = self.backends[b.name] = Ring(BACKEND_COLUMNS, self._backend_samples)
            ring.append(
                {
                    "t": t, "up": float(b.healthy), "ok": per.ok,
                    "compile_error": per.compile_error, "failures": failures,
                    "turned_away": turned, "slots_used": b.slots - b.free, "slots": b.slots,
                    "p50_ms": quantile_ms(per.latencies, 0.5),
                    "p95_ms": quantile_ms(per.latencies, 0.95),
                }
            )  # fmt: skip

    def export(self, since: float = 0.0, backend: str | None = None) -> dict[str, object]:
        """The farm's rows (or one backend's) after ``since``, as the dashboard reads them."""
        if backend is None:
            return {"sample_s": self.sample_s, "rows": self.total.export(since)}
        ring = self.backends.get(backend)
        rows = ring.export(since) if ring else {name: [] for name in BACKEND_COLUMNS}
        return {"sample_s": self.sample_s * self.backend_every, "rows": rows, "backend": backend}


def merge_exports(parts: Iterable[dict[str, object] | None]) -> dict[str, object] | None:
    """Several workers' exports of the same ring as one: counts summed by sample time,
    in-rotation gauges the largest (every worker sees the same backends), quantiles
    averaged weighted by each worker's jobs (an approximation)."""
    present = [p for p in parts if p is not None]
    if not present:
        return None
    merged: dict[float, dict[str, float]] = {}
    weights: dict[float, dict[str, float]] = {}
    for part in present:
        rows: dict[str, list[float | None]] = part["rows"]  # type: ignore[assignment]
        for i, t in enumerate(rows["t"]):
            assert t is not None
            into = merged.setdefault(t, {"t": t})
            weight = (rows.get("ok", [0])[i] or 0) + (rows.get("compile_error", [0])[i] or 0)
            for name, column in rows.items():
                value = column[i]
                if name == "t" or value is None:
                    continue
                if name in _GAUGES:
                    into[name] = max(into.get(name, value), value)
                elif name in _QUANTILES:
                    into[name] = into.get(name, 0.0) + value * max(weight, 1e-9)
                    w = weights.setdefault(t, {})
                    w[name] = w.get(name, 0.0) + max(weight, 1e-9)
                else:
                    into[name] = into.get(name, 0.0) + value
    columns = list(present[0]["rows"])  # type: ignore[call-overload]
    out: dict[str, list[float | None]] = {name: [] for name in columns}
    for t in sorted(merged):
        row = merged[t]
        for name in _QUANTILES:
            if name in row:
                row[name] = round(row[name] / weights[t][name], 1)
        for name in columns:
            out[name].append(row.get(name))
    return {**present[0], "rows": out}
