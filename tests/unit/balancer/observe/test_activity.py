"""The dashboard's state in the balancer: the ring, the history's samples and their
merge across workers, the jobs in flight, clients, failures and state changes."""

from __future__ import annotations

import asyncio
import math

from balancer.dispatch.attempts import Attempt
from balancer.observe.activity import (
    CURRENT,
    MAX_CLIENTS,
    MAX_FAILURES,
    Activity,
    merge_snapshots,
)
from balancer.observe.history import History, merge_exports
from balancer.routing.backend import Backend, BackendSpec
from daemon.ring import Ring, quantile_ms


def test_a_ring_keeps_the_newest_rows_in_order_and_exports_after_a_time() -> None:
    ring = Ring(("t", "v"), 3)
    for t in range(1, 6):
        ring.append({"t": float(t), "v": t * 10.0})
    assert ring.export() == {"t": [3.0, 4.0, 5.0], "v": [30.0, 40.0, 50.0]}
    assert ring.export(since=4.0) == {"t": [5.0], "v": [50.0]}
    ring.append({"t": 6.0})  # (a column not given is None)
    assert ring.export(since=5.0) == {"t": [6.0], "v": [None]}


def test_quantile_ms_is_nan_without_values() -> None:
    assert math.isnan(quantile_ms([], 0.5))
    assert quantile_ms([0.010, 0.020, 0.030], 0.5) == 20.0


def _backend(name: str, slots: int) -> Backend:
    return Backend(BackendSpec.parse(f"{name}:1,slots={slots}"))


def test_a_sample_counts_the_jobs_since_the_last_and_the_slots_now() -> None:
    history = History(sample_s=2.0, samples=10, backend_every=2)
    a, b = _backend("a", 4), _backend("b", 2)
    a.healthy = b.healthy = True
    for _ in range(3):
        assert a.reserve()
    history.job("ok", 0.1, backend="a:1")
    history.job("ok", 0.3, backend="a:1", queued_s=0.2)
    history.job("ok", 0.2, backend="a:1")
    history.job("ok", 0.001, cached=True)
    history.job("no_compiler", 0.0)
    history.job("rejected_policy", 0.0)
    history.job("client_disconnect", 5.0)  # (not a job's end the chart shows)
    row = history.sample([a, b], cache=(10, 4), in_flight=3, now=101.4)
    assert row["t"] == 102.0  # (aligned to the sample period)
    assert (row["ok"], row["cache_hit"], row["failed"], row["refused"]) == (3, 1, 1, 1)
    assert (row["slots_used"], row["slots"], row["in_flight"]) == (3, 6, 3)
    assert row["p50_ms"] == 200.0 and row["queue_p95_ms"] == 200.0
    assert (row["cache_lookups"], row["cache_hits"]) == (0, 0)  # (the first: no interval)
    b.healthy = False
    row = history.sample([a, b], cache=(15, 8), now=103.4)
    assert (row["ok"], row["slots"], row["cache_lookups"], row["cache_hits"]) == (0, 4, 5, 4)
    assert math.isnan(row["p50_ms"])
    exported = history.export()
    # The exports are the page's JSON (dict[str, object]); the ignores here and below
    # index into their rows (index) and lists (attr-defined, arg-type).
    assert exported["rows"]["t"] == [102.0, 104.0]  # type: ignore[index]
    assert exported["rows"]["p50_ms"] == [200.0, None]  # type: ignore[index]


def test_each_backend_gets_a_row_every_few_samples_with_what_happened_between() -> None:
    history = History(sample_s=1.0, samples=20, backend_every=2)
    a = _backend("a", 2)
    a.healthy = True
    history.sample([a], now=1.0)  # (the first sample makes the first backend row)
    history.job("ok", 0.5, backend="a:1")
    history.job("compile_error", 0.7, backend="a:1")
    a.failures, a.turned_away = 3, 1
    history.sample([a], now=2.0)
    rows = history.export(backend="a:1")["rows"]
    assert rows["t"] == [1.0, 2.0]  # type: ignore[index]
    assert rows["ok"] == [0.0, 1.0] and rows["compile_error"] == [0.0, 1.0]  # type: ignore[index]
    assert rows["failures"] == [0.0, 3.0] and rows["turned_away"] == [0.0, 1.0]  # type: ignore[index]
    assert history.export(backend="a:1")["sample_s"] == 2.0
    history.sample([], now=3.0)
    history.sample([], now=4.0)  # (a is gone: a reload removed it)
    assert history.export(backend="a:1")["rows"]["t"] == []  # type: ignore[index]


def test_workers_histories_merge_by_sample_time() -> None:
    one = {"sample_s": 2.0, "rows": {"t": [2.0, 4.0], "ok": [1.0, 2.0], "compile_error": [0.0, 0.0],
                                     "slots_used": [1.0, 3.0], "p50_ms": [10.0, None]}}  # fmt: skip
    two = {"sample_s": 2.0, "rows": {"t": [4.0, 6.0], "ok": [6.0, 1.0], "compile_error": [0.0, 0.0],
                                     "slots_used": [2.0, 2.0], "p50_ms": [30.0, 5.0]}}  # fmt: skip
    merged = merge_exports([one, None, two])
    assert merged is not None
    rows = merged["rows"]
    assert rows["t"] == [2.0, 4.0, 6.0]  # type: ignore[index]
    assert rows["ok"] == [1.0, 8.0, 1.0]  # type: ignore[index]
    assert rows["slots_used"] == [1.0, 3.0, 2.0]  # type: ignore[index]
    assert rows["p50_ms"] == [10.0, 30.0, 5.0]  # type: ignore[index]
    assert merge_exports([None]) is None


class _Attempts:
    def __init__(self) -> None:
        self.running: list[Attempt] = []
        self.hedges = 0
        self.winner: Attempt | None = None

    def describe(self) -> list[dict[str, object]]:
        return [{"backend": a.backend.name} for a in self.running]


def test_a_job_in_flight_is_shown_with_its_attempts_and_gone_when_it_ends() -> None:
    activity = Activity()

    async def job() -> None:
        live = activity.start("j1", "alice@EXAMPLE", "foo.c", "gcc")
        attempts = _Attempts()
        live.watch(attempts)  # (what the dispatcher does with a job's attempt record)
        assert live.attempts is attempts
        shown = activity.jobs()
        assert [(j["job_id"], j["client"], j["file"], j["phase"]) for j in shown] == [
            ("j1", "alice@EXAMPLE", "foo.c", "queued")
        ]
        activity.finish(live, "ok", 1.5, backend="b:1")

    asyncio.run(job())
    assert activity.jobs() == [] and CURRENT.get() is None
    assert activity.clients()[0] == {
        "client": "alice@EXAMPLE", "jobs": 1, "compile_s": 1.5, "cache_hits": 0, "failed": 0,
        "in_flight": 0,
    }  # fmt: skip


def test_a_job_that_ended_without_finish_is_forgotten() -> None:
    activity = Activity()

    async def crashed() -> None:
        activity.start("j2", "10.0.0.1", "bar.c", "gcc")
        activity.forget()

    asyncio.run(crashed())
    assert activity.live == {}


def test_failures_changes_and_clients_stay_bounded() -> None:
    activity = Activity()
    for i in range(MAX_FAILURES + 10):
        activity.finish(None, "failed", 0.1, reason=f"r{i}", client="10.0.0.9")
    assert len(activity.failures) == MAX_FAILURES
    assert activity.failures[-1]["reason"] == f"r{MAX_FAILURES + 9}"
    for i in range(MAX_CLIENTS + 5):
        activity.finish(None, "ok", 0.1, client=f"10.1.{i // 256}.{i % 256}")
    clients = {c["client"] for c in activity.clients()}
    assert len(clients) == MAX_CLIENTS and "10.0.0.9" not in clients  # (seen longest ago)
    for i in range(500):
        activity.state_changed("b:1", "down" if i % 2 else "up", "probe failed")
    assert len(activity.changes) < 500


def test_workers_snapshots_merge_jobs_clients_and_one_of_each_change() -> None:
    def part(job: str, jobs: int) -> dict[str, object]:
        return {
            "jobs": [{"job_id": job, "started": 1.0 if job == "a" else 0.5}],
            "jobs_in_flight": 1,
            "failures": [],
            "changes": [{"at": 10.2, "backend": "b:1", "state": "down", "reason": "x"}],
            "clients": [
                {
                    "client": "10.0.0.1",
                    "jobs": jobs,
                    "compile_s": 1.25,
                    "cache_hits": 0,
                    "failed": 0,
                    "in_flight": 1,
                }
            ],
        }

    merged = merge_snapshots([part("a", 2), None, part("b", 3)])
    assert [j["job_id"] for j in merged["jobs"]] == ["b", "a"]  # type: ignore[attr-defined]
    assert merged["jobs_in_flight"] == 2
    assert len(merged["changes"]) == 1  # type: ignore[arg-type]
    assert merged["clients"] == [
        {"client": "10.0.0.1", "jobs": 5, "compile_s": 2.5, "cache_hits": 0, "failed": 0,
         "in_flight": 2}
    ]  # fmt: skip
