"""balancer/workers/shared.py and the merging in balancer/workers/supervisor.py, without
processes: one SharedCounts seen as each worker in turn."""

from __future__ import annotations

import os
import time

from balancer.routing.backend import Backend, BackendReport, BackendSpec
from balancer.workers.merge import merge_metrics, merge_status
from balancer.workers.shared import SharedCounts


def test_each_worker_sees_what_the_others_hold_and_is_told_of_changes() -> None:
    shared = SharedCounts(3, capacity=8)
    a, b = shared.slot("h1:3632"), shared.slot("h2:3632")
    assert a.index != b.index and shared.slot("h1:3632").index == a.index
    shared.become(1)
    a.add(2)
    shared.become(2)
    a.add(1)
    assert a.elsewhere() == 2  # worker 1's, not its own
    shared.become(0)
    assert a.elsewhere() == 3 and b.elsewhere() == 0
    assert shared.read_changes() == set()  # slots taken are not told (picks recheck)
    shared.become(1)
    a.add(-1)
    shared.become(0)
    assert shared.read_changes() == set()  # nor given back, while no job here waits
    shared.want_changes(time.monotonic() + 60)
    shared.become(1)
    a.add(1)
    a.add(-1)
    shared.become(0)
    assert shared.read_changes() == {a.index}  # now it is
    assert shared.read_changes() == set()
    assert a.elsewhere() == 2
    shared.forget(1)
    assert a.elsewhere() == 1


def test_a_backend_counts_the_other_workers_and_reserves_only_a_free_slot() -> None:
    shared = SharedCounts(2, capacity=8)
    mine, theirs = Backend(BackendSpec("h", 1)), Backend(BackendSpec("h", 1))
    mine.shared, theirs.shared = shared.slot("h:1"), shared.slot("h:1")
    for backend in (mine, theirs):
        backend.healthy = True
        backend.on_report(BackendReport(slots=2, busy=0))
    shared.become(1)
    assert theirs.reserve() and theirs.reserve()
    shared.become(0)
    assert mine.free == 0
    assert not mine.reserve()
    assert mine.in_flight == 0
    shared.become(1)
    theirs.in_flight -= 1
    shared.become(0)
    assert mine.free == 1 and mine.reserve() and mine.in_flight == 1


def test_merged_status_adds_counts_and_keeps_what_all_see_alike() -> None:
    def status(ok: int, sent: int, free: int) -> dict[str, object]:
        return {
            "backends": [{"name": "h:1", "sent": sent, "in_flight": 1, "free": free}],
            "totals": {"ok": ok, "slots": 4, "free": free, "healthy_backends": 1},
            "cache": None,
            "connections": {"open": 2, "max": 10},
        }

    merged = merge_status(status(3, 5, 1), [status(4, 6, 1), None])
    assert merged["totals"] == {"ok": 7, "slots": 4, "free": 1, "healthy_backends": 1}
    assert merged["backends"] == [{"name": "h:1", "sent": 11, "in_flight": 2, "free": 1}]
    assert merged["connections"] == {"open": 4, "max": 10}
    assert merged["workers"] == {"count": 3, "answered": 2}


def test_merged_status_adds_each_workers_queue_counts_per_share_but_not_the_shared_use() -> None:
    def status(jobs: int, queued: float) -> dict[str, object]:
        share = {"name": "ci", "weight": 0.25, "recent_s": 12.0, "running": 3, "waiting": 5,
                 "jobs": jobs, "queued_s": queued}  # fmt: skip
        return {"backends": [], "totals": {}, "cache": None, "shares": [share]}

    merged = merge_status(status(2, 1.5), [status(3, 2.0), None])
    assert merged["shares"] == [
        {"name": "ci", "weight": 0.25, "recent_s": 12.0, "running": 3, "waiting": 5,
         "jobs": 5, "queued_s": 3.5}
    ]  # fmt: skip


def test_a_forked_worker_writes_its_share_use_where_the_others_read_it() -> None:
    shared = SharedCounts(2)
    index = shared.shares.entry("alice@EXAMPLE.COM", 0.0)
    pid = os.fork()
    if pid == 0:  # worker 1, in its own process
        code = 1
        try:
            shared.become(1)
            shared.shares.started(shared.shares.entry("alice@EXAMPLE.COM", 10.0), 10.0)
            shared.shares.ended(index, 10.0, 14.0, 60.0)
            shared.shares.set_waiting(index, 2, 1)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    use = shared.shares.use(index, 14.0, 60.0)
    assert (use.recent_s, use.running, use.waiting, use.kinds_elsewhere) == (4.0, 0, 2, 1)
    assert shared.shares.waiting_elsewhere() == 2
    shared.forget(1)
    assert shared.shares.waiting_elsewhere() == 0
    assert shared.shares.use(index, 14.0, 60.0).recent_s == 4.0  # (its past use is kept)


def test_merged_metrics_add_counters_and_histograms_but_not_shared_gauges() -> None:
    def text(ok: int, free: int) -> str:
        return (
            "# HELP distlb_balancer_jobs_total Jobs\n# TYPE distlb_balancer_jobs_total counter\n"
            f'distlb_balancer_jobs_total{{outcome="ok"}} {ok}\n'
            "# HELP distlb_backend_free Free\n# TYPE distlb_backend_free gauge\n"
            f'distlb_backend_free{{backend="h:1"}} {free}\n'
            "# HELP distlb_backend_in_flight Ours\n# TYPE distlb_backend_in_flight gauge\n"
            'distlb_backend_in_flight{backend="h:1"} 1\n'
            "# HELP t Seconds\n# TYPE t histogram\n"
            't_bucket{le="1.0"} 2\nt_bucket{le="+Inf"} 3\nt_count 3\nt_sum 1.5\n'
        )

    merged = merge_metrics(text(3, 2), [text(4, 2)])
    assert 'distlb_balancer_jobs_total{outcome="ok"} 7.0' in merged
    assert 'distlb_backend_free{backend="h:1"} 2.0' in merged
    assert 'distlb_backend_in_flight{backend="h:1"} 2.0' in merged
    assert 't_bucket{le="+Inf"} 6.0' in merged and "t_sum 3.0" in merged


def test_merged_metrics_keep_one_build_info_and_the_worst_reload_of_any_worker() -> None:
    def text(successful: int, success_at: float) -> str:
        return (
            "# HELP distlb_build_info Build\n# TYPE distlb_build_info gauge\n"
            'distlb_build_info{role="balancer",version="1.2.3"} 1\n'
            "# HELP distlb_config_last_reload_successful Ok\n"
            "# TYPE distlb_config_last_reload_successful gauge\n"
            f"distlb_config_last_reload_successful {successful}\n"
            "# HELP distlb_config_last_reload_success_timestamp_seconds At\n"
            "# TYPE distlb_config_last_reload_success_timestamp_seconds gauge\n"
            f"distlb_config_last_reload_success_timestamp_seconds {success_at}\n"
        )

    merged = merge_metrics(text(1, 2000.0), [text(0, 1000.0), text(1, 3000.0)])

    assert 'distlb_build_info{role="balancer",version="1.2.3"} 1.0' in merged
    assert "distlb_config_last_reload_successful 0.0" in merged
    assert "distlb_config_last_reload_success_timestamp_seconds 1000.0" in merged


def test_merged_status_shows_a_workers_failed_reload() -> None:
    def status(reload: dict[str, object]) -> dict[str, object]:
        return {"backends": [], "totals": {}, "cache": None, "reload": reload}

    ok = {"successful": True, "last_success_at": 2.0, "last_attempt_at": 2.0, "reason": ""}
    failed = {"successful": False, "last_success_at": 1.0, "last_attempt_at": 2.0,
              "reason": "bad backend"}  # fmt: skip

    assert merge_status(status(ok), [status(ok), None])["reload"] == ok
    assert merge_status(status(ok), [status(failed)])["reload"] == failed
