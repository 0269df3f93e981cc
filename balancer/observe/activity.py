"""What the farm is doing now and who did it lately, for the dashboard: the jobs in
flight (with the backends each runs on), the recent failures, backends leaving and
joining rotation, and per client the last hour's jobs. Everything here is bounded in
count; nothing is kept past an hour.

A job is registered by its connection (:meth:`Activity.start`), which hands the
dispatcher :meth:`LiveJob.watch` for the job's attempt record: the dispatcher needs no
reference to this."""

from __future__ import annotations

import collections
import time
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol

from balancer.observe.history import History

MAX_FAILURES = 50
MAX_CHANGES = 200
MAX_CLIENTS = 1000
"""Clients remembered; the one seen longest ago is forgotten first."""
CLIENT_BUCKET_S = 60
CLIENT_BUCKETS = 60
MAX_JOBS_SHOWN = 400
"""Jobs in flight sent to a viewer (the oldest first: they are the ones to look at)."""


class _Attempt(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def started(self) -> float: ...
    @property
    def backend(self) -> _Named: ...


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class _Attempts(Protocol):
    @property
    def running(self) -> Sequence[_Attempt]: ...
    @property
    def hedges(self) -> int: ...
    @property
    def winner(self) -> _Attempt | None: ...
    def describe(self) -> list[dict[str, object]]: ...


@dataclass(eq=False)
class LiveJob:
    job_id: str
    client: str
    """The Kerberos principal with --auth, else the address."""
    file: str
    compiler: str
    started: float
    """monotonic"""
    attempts: _Attempts | None = None
    """The job's attempt record (balancer/dispatch/attempts.py) once it goes to backends."""

    def watch(self, attempts: _Attempts) -> None:
        """Show ``attempts`` as this job's (the dispatcher calls this as it makes them)."""
        self.attempts = attempts

    def describe(self, now: float, wall_now: float) -> dict[str, object]:
        attempts = self.attempts
        running = list(attempts.running) if attempts is not None else []
        if attempts is None:
            phase = "lookup"  # (the cache, or the judge's verdict before it)
        elif running:
            phase = "running"
        elif attempts.winner is not None:
            phase, running = "replying", [attempts.winner]  # (shown where it came from)
        else:
            phase = "queued"
        return {
            "job_id": self.job_id,
            "client": self.client,
            "file": self.file,
            "compiler": self.compiler,
            "started": round(wall_now - (now - self.started), 3),
            "age_s": round(now - self.started, 3),
            "phase": phase,
            "hedged": attempts is not None and attempts.hedges > 0,
            "on": [
                {"backend": a.backend.name, "kind": a.kind, "age_s": round(now - a.started, 3)}
                for a in running
            ],
        }


CURRENT: ContextVar[LiveJob | None] = ContextVar("distlb_live_job", default=None)
"""The job the running task serves (set by the connection before dispatching)."""


@dataclass
class _Client:
    buckets: collections.deque[list[float]] = field(
        default_factory=lambda: collections.deque(maxlen=CLIENT_BUCKETS)
    )
    """[start of minute, jobs, compile seconds, cache hits, failed]"""


class Activity:
    """The dashboard's live state and history (:class:`balancer.observe.history.History`)."""

    def __init__(self, history: History | None = None) -> None:
        self.history = history or History()
        self.live: dict[str, LiveJob] = {}
        self.failures: collections.deque[dict[str, object]] = collections.deque(maxlen=MAX_FAILURES)
        self.changes: collections.deque[dict[str, object]] = collections.deque(maxlen=MAX_CHANGES)
        self._clients: collections.OrderedDict[str, _Client] = collections.OrderedDict()

    def start(self, job_id: str, client: str, file: str, compiler: str) -> LiveJob:
        live = LiveJob(job_id, client, file, compiler, time.monotonic())
        self.live[job_id] = live
        CURRENT.set(live)
        return live

    def forget(self) -> None:
        """Drop the current task's job if it is still shown (it ended without
        :meth:`finish`)."""
        live = CURRENT.get()
        if live is not None:
            self.live.pop(live.job_id, None)
            CURRENT.set(None)

    def finish(
        self,
        live: LiveJob | None,
        outcome: str,
        seconds: float,
        *,
        backend: str | None = None,
        queued_s: float = 0.0,
        cached: bool = False,
        reason: str = "",
        client: str = "",
    ) -> None:
        """A job ended (``live`` None: it ended before it was registered, e.g. refused
        by the judge or a bad request)."""
        if live is not None:
            self.live.pop(live.job_id, None)
            client = live.client
        self.history.job(outcome, seconds, backend=backend, queued_s=queued_s, cached=cached)
        failed = outcome in ("failed", "no_compiler", "turned_away", "reply_refused", "bad_request")
        if failed or outcome == "rejected_policy":
            self.failures.append(
                {
                    "at": round(time.time(), 3),
                    "job_id": live.job_id if live else "",
                    "client": client,
                    "file": live.file if live else "",
                    "outcome": outcome,
                    "reason": reason[:300],
                }
            )
        if client:
            self._count_client(client, seconds, cached, failed, outcome)

    def _count_client(
        self, client: str, seconds: float, cached: bool, failed: bool, outcome: str
    ) -> None:
        entry = self._clients.pop(client, None) or _Client()
        self._clients[client] = entry  # (the most recently seen last)
        while len(self._clients) > MAX_CLIENTS:
            self._clients.popitem(last=False)
        minute = float(int(time.time() // CLIENT_BUCKET_S) * CLIENT_BUCKET_S)
        if not entry.buckets or entry.buckets[-1][0] != minute:
            entry.buckets.append([minute, 0.0, 0.0, 0.0, 0.0])
        bucket = entry.buckets[-1]
        bucket[1] += 1
        if outcome in ("ok", "compile_error") and not cached:
            bucket[2] += seconds
        bucket[3] += int(cached)
        bucket[4] += int(failed)

    def state_changed(self, backend: str, state: str, reason: str) -> None:
        self.changes.append(
            {"at": round(time.time(), 3), "backend": backend, "state": state, "reason": reason}
        )

    def clients(self, window_s: float = 3600.0) -> list[dict[str, object]]:
        """Per client over the last ``window_s``: jobs, compile seconds, cache hits,
        most jobs first."""
        since = time.time() - window_s
        in_flight = collections.Counter(job.client for job in self.live.values())
        rows: list[dict[str, object]] = []
        for name in [*self._clients, *(c for c in in_flight if c not in self._clients)]:
            entry = self._clients.get(name)
            buckets = [b for b in entry.buckets if b[0] + CLIENT_BUCKET_S > since] if entry else []
            if not buckets and not in_flight[name]:
                continue
            rows.append(
                {
                    "client": name,
                    "jobs": int(sum(b[1] for b in buckets)),
                    "compile_s": round(sum(b[2] for b in buckets), 3),
                    "cache_hits": int(sum(b[3] for b in buckets)),
                    "failed": int(sum(b[4] for b in buckets)),
                    "in_flight": in_flight[name],
                }
            )
        rows.sort(key=lambda r: (-int(str(r["jobs"])) - int(str(r["in_flight"])), str(r["client"])))
        return rows

    def jobs(self) -> list[dict[str, object]]:
        now, wall_now = time.monotonic(), time.time()
        oldest = sorted(self.live.values(), key=lambda j: j.started)[:MAX_JOBS_SHOWN]
        return [job.describe(now, wall_now) for job in oldest]

    def snapshot(self) -> dict[str, object]:
        """What a viewer gets on every update (the history goes separately)."""
        return {
            "jobs": self.jobs(),
            "jobs_in_flight": len(self.live),
            "failures": list(self.failures)[-20:],
            "changes": list(self.changes)[-50:],
            "clients": self.clients()[:50],
        }


def merge_snapshots(snapshots: Iterable[dict[str, object] | None]) -> dict[str, object]:
    """Several workers' snapshots (``--workers``) as one: jobs, failures and changes
    together, clients summed."""
    parts = [s for s in snapshots if s is not None]
    jobs: list[dict[str, object]] = []
    failures: list[dict[str, object]] = []
    changes: dict[tuple[object, ...], dict[str, object]] = {}
    clients: dict[str, dict[str, object]] = {}
    for part in parts:
        jobs.extend(part["jobs"])  # type: ignore[arg-type]
        failures.extend(part["failures"])  # type: ignore[arg-type]
        for change in part["changes"]:  # type: ignore[attr-defined]
            # (each worker sees every backend change: keep one of each)
            changes.setdefault((change["backend"], change["state"], round(change["at"])), change)
        for row in part["clients"]:  # type: ignore[attr-defined]
            name = row["client"]
            into = clients.setdefault(name, dict.fromkeys(row, 0) | {"client": name})
            for key, value in row.items():
                if key != "client":
                    into[key] = round(into[key] + value, 3)
    jobs.sort(key=lambda j: float(str(j["started"])))
    failures.sort(key=lambda f: float(str(f["at"])))
    return {
        "jobs": jobs[:MAX_JOBS_SHOWN],
        "jobs_in_flight": sum(int(str(p["jobs_in_flight"])) for p in parts),
        "failures": failures[-20:],
        "changes": sorted(changes.values(), key=lambda c: float(str(c["at"])))[-50:],
        "clients": sorted(clients.values(), key=lambda r: (-int(str(r["jobs"])), str(r["client"])))[
            :50
        ],
    }
