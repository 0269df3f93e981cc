"""``--workers 2``: two balancer processes behind one port, sharing what they hold on
each backend, seen from outside as one balancer (real distlb-server backends)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Sequence
from pathlib import Path

import pytest

from client import compile_remote
from tests.support.servers import (
    BalancerProcess,
    ServerProcess,
    StartBalancer,
    StartServer,
    process_table,
    wait_until,
)
from wire import Request

pytestmark = pytest.mark.integration


def _spec(server: ServerProcess) -> str:
    return f"127.0.0.1:{server.port},status={server.stats_port}"


def _workers(balancer: BalancerProcess) -> list[int]:
    return sorted(pid for pid, ppid, _, state in process_table()
                  if ppid == balancer.proc.pid and state != "Z")  # fmt: skip


def _run(port: int, argvs: Sequence[tuple[str, ...]]) -> list[int]:
    async def jobs() -> list[int]:
        async def one(i: int, argv: tuple[str, ...]) -> int:
            request = Request(1, argv, f"int x{i};\n".encode())
            return (await compile_remote("127.0.0.1", port, request, timeout_s=120)).status

        return await asyncio.gather(*(one(i, argv) for i, argv in enumerate(argvs)))

    return asyncio.run(jobs())


def test_two_workers_never_send_a_backend_more_jobs_than_its_free_slots(
    start_server: StartServer,
    start_balancer: StartBalancer,
    fake_compilers: tuple[Path, Path],
) -> None:
    """Sixteen slow jobs at once over two workers for one backend with two slots: each
    worker alone would send two; together they never have more than two there (the
    backend turns none away), and /status, /metrics count the jobs of both."""
    bin_dir, _ = fake_compilers
    server = start_server("--jobs", "2", "--compiler", "slow-cc", "--compiler", "gcc",
                          path_prepend=str(bin_dir))  # fmt: skip
    balancer = start_balancer("--backend", _spec(server), "--workers", "2",
                              "--allow-compiler", "slow-cc", "--queue-timeout", "120",
                              "--tail-hedge", "0", "--hedge-min", "300")  # fmt: skip
    # (worker 0 says the balancer is ready; worker 1 may still be starting)
    wait_until(lambda: len(_workers(balancer)) == 2, 30, "two workers")
    balancer.wait_healthy(1)
    wait_until(lambda: balancer.status()["workers"] == {"count": 2, "answered": 2}, 30,
               "both workers answering")  # fmt: skip
    jobs = 16
    argvs = [("slow-cc", "-c", f"f{i}.c", "-o", f"f{i}.o") for i in range(jobs)]
    assert _run(balancer.port, argvs) == [0] * jobs
    counters = server.status()["counters"]
    assert counters["rejected_busy"] == 0, counters
    assert server.status()["busy_max"] == 2
    # A job's line and its counts come after its reply: wait for the last ones to land.
    wait_until(lambda: len(balancer.events("job_done")) >= jobs, 30, "every job's line")
    wait_until(lambda: balancer.totals()["ok"] >= jobs, 30, "every job counted")
    served = [e.get("worker") for e in balancer.events("job_done")]
    assert len(served) == jobs and set(served) == {0, 1}, "both workers took jobs"
    status = balancer.status()
    backend = status["backends"][0]
    assert backend["turned_away"] == 0
    assert backend["sent"] == jobs  # the two workers' counts, added
    assert status["totals"]["ok"] == jobs
    assert f'distlb_balancer_jobs_total{{outcome="ok"}} {float(jobs)!r}' in balancer.http(
        "/metrics"
    )
    # The dashboard's data holds both workers' jobs: per client, and in the history
    # (each worker's samples, lined up by time, once the last sample is taken).
    activity = json.loads(balancer.http("/dashboard.json"))["activity"]
    assert [(c["client"], c["jobs"]) for c in activity["clients"]] == [("127.0.0.1", jobs)]

    def sampled() -> bool:
        rows = json.loads(balancer.http("/history.json"))["rows"]
        return sum(v or 0 for v in rows["ok"]) == jobs

    wait_until(sampled, 15, "both workers' jobs in the history")
    assert balancer.stop() == 0


def test_a_worker_that_dies_is_started_again_and_jobs_go_on(
    start_server: StartServer, start_balancer: StartBalancer
) -> None:
    server = start_server("--jobs", "2")
    balancer = start_balancer("--backend", _spec(server), "--workers", "2")
    balancer.wait_healthy(1)
    wait_until(lambda: len(_workers(balancer)) == 2, 30, "two workers")
    first = _workers(balancer)
    os.kill(first[1], signal.SIGKILL)
    wait_until(lambda: len(_workers(balancer)) == 2 and _workers(balancer) != first, 30,
               "the worker started again")  # fmt: skip
    assert balancer.logged("worker_exited")["exit"] == -signal.SIGKILL
    wait_until(lambda: balancer.status()["workers"]["answered"] == 2, 30, "both answering")
    argvs = [("gcc", "-c", f"g{i}.c", "-o", f"g{i}.o") for i in range(8)]
    assert _run(balancer.port, argvs) == [0] * 8
    assert balancer.stop() == 0
    assert _workers(balancer) == []


def test_sighup_reaches_every_worker(
    start_server: StartServer, start_balancer: StartBalancer, tmp_path: Path
) -> None:
    one, two = start_server("--jobs", "1"), start_server("--jobs", "1")
    config = tmp_path / "balancer.toml"
    config.write_text(f'backend = ["{_spec(one)}"]\nworkers = 2\n')
    balancer = start_balancer(config_file=config)
    balancer.wait_healthy(1)
    config.write_text(f'backend = ["{_spec(one)}", "{_spec(two)}"]\nworkers = 2\n')
    balancer.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: len(balancer.events("reloaded")) == 2, 30, "both workers reloaded")
    assert {e["worker"] for e in balancer.events("reloaded")} == {0, 1}
    balancer.wait_healthy(2)
