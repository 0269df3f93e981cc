"""What the server's /dashboard shows beyond /status: the jobs running now and the last
hour (a ring: a row every few seconds of slots in use, jobs by outcome and their
latency). Bounded: the running jobs are bounded by the slots, the ring is fixed."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from daemon.ring import Ring, quantile_ms

SAMPLE_S = 5.0
SAMPLES = 720
MAX_LATENCIES = 4096
OUTCOMES = ("ok", "compile_error", "rejected_busy", "failed")
"""failed: a time limit, a resource bound, a bad request or a refusal by the judge."""
COLUMNS = ("t", *OUTCOMES, "busy", "slots", "p50_ms", "p95_ms")
_FAILED = ("timeout", "other", "bad_request", "rejected_policy")


@dataclass
class Running:
    file: str
    compiler: str
    client: str
    started: float
    """monotonic"""


@dataclass
class ServerActivity:
    history: Ring = field(default_factory=lambda: Ring(COLUMNS, SAMPLES))
    running: dict[str, Running] = field(default_factory=dict)
    _counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    _latencies: list[float] = field(default_factory=list)

    def started(self, job_id: str, file: str, compiler: str, client: str) -> None:
        self.running[job_id] = Running(file, compiler, client, time.monotonic())

    def ended(self, job_id: str) -> None:
        self.running.pop(job_id, None)

    def job(self, outcome: str, seconds: float) -> None:
        name = "failed" if outcome in _FAILED else outcome
        if name in self._counts:
            self._counts[name] += 1
        if name in ("ok", "compile_error") and len(self._latencies) < MAX_LATENCIES:
            self._latencies.append(seconds)

    def turned_away(self) -> None:
        self._counts["rejected_busy"] += 1

    def sample(self, busy: int, slots: int, now: float | None = None) -> None:
        now = time.time() if now is None else now
        latencies, self._latencies = self._latencies, []
        row: dict[str, float] = {"t": round(now / SAMPLE_S) * SAMPLE_S, **self._counts}
        self._counts = dict.fromkeys(OUTCOMES, 0)
        row.update(busy=busy, slots=slots)
        row["p50_ms"], row["p95_ms"] = quantile_ms(latencies, 0.5), quantile_ms(latencies, 0.95)
        self.history.append(row)

    def snapshot(self, since: float = 0.0) -> dict[str, object]:
        now, wall_now = time.monotonic(), time.time()
        jobs = [
            {
                "job_id": job_id, "file": r.file, "compiler": r.compiler, "client": r.client,
                "age_s": round(now - r.started, 3),
                "started": round(wall_now - (now - r.started), 3),
            }
            for job_id, r in sorted(self.running.items(), key=lambda kv: kv[1].started)
        ]  # fmt: skip
        return {"running": jobs, "sample_s": SAMPLE_S, "rows": self.history.export(since)}
