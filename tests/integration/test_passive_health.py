"""Jobs that finish well count as health checks: a busy backend is not also probed."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from datetime import datetime
from pathlib import Path

import pytest

from client import ClientError, compile_remote
from client.prober import probe_request
from tests.support.servers import (
    ServerProcess,
    StartBalancer,
    StartServer,
    wait_until,
)
from wire import Request

pytestmark = pytest.mark.integration

PROBE_INTERVAL_S = 0.1
JOBS = 160
CONCURRENCY = 4


def _probes(server: ServerProcess) -> list[float]:
    """When each compile probe ended on the server (from its job_done events, logged at
    debug: the server must run with ``--log-level debug``)."""
    return [
        datetime.fromisoformat(e["timestamp"]).timestamp()
        for e in server.events("job_done")
        if e.get("input") == "distlb-probe.c"
    ]


async def _stream(port: int) -> None:
    request = probe_request("gcc")  # a trivial compile, as a job
    job = Request(request.protocol, ("gcc", "-c", "job.c", "-o", "job.o"), request.source)
    queue = list(range(JOBS))

    async def worker() -> None:
        while queue:
            queue.pop()
            reply = await compile_remote("127.0.0.1", port, job, timeout_s=30)
            assert reply.status == 0

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


def test_backend_finishing_jobs_is_not_probed_meanwhile(
    start_server: StartServer, start_balancer: StartBalancer
) -> None:
    server = start_server("--jobs", "8", "--log-level", "debug")
    balancer = start_balancer(
        "--backend", f"127.0.0.1:{server.port},status={server.stats_port}",
        "--probe-interval", str(PROBE_INTERVAL_S), "--idle-probe-interval", "1",
    )  # fmt: skip
    balancer.wait_healthy(1)
    began = time.time()
    asyncio.run(_stream(balancer.port))
    ended = time.time()
    intervals = (ended - began) / PROBE_INTERVAL_S
    during = [t for t in _probes(server) if began <= t <= ended]
    # Probing every interval would put about one probe in each; with jobs finishing
    # in (nearly) every interval, almost none are needed.
    assert intervals >= 10, f"the stream was too short to tell ({intervals:.1f} intervals)"
    assert len(during) <= 0.25 * intervals, (len(during), intervals)
    # And probing resumes once the jobs stop: the backend is checked again (at the idle
    # probe interval, its reports coming all the while).
    before = len(_probes(server))
    wait_until(lambda: len(_probes(server)) >= before + 2, 10, "probes after the jobs")


_BREAKABLE_GCC = """#!/bin/sh
# gcc until the marker file appears, then a compiler that fails every compile.
for arg in "$@"; do
    case "$arg" in -E|--version|-dumpversion|-dumpmachine) exec {gcc} "$@";; esac
done
[ -e {marker} ] && {{ echo "broken compiler" >&2; exit 1; }}
exec {gcc} "$@"
"""


def test_jobs_that_fail_do_not_stand_in_for_probes(
    start_server: StartServer, start_balancer: StartBalancer, shared_tmp: Path
) -> None:
    # A server whose compiler breaks under a stream of jobs answers every job, fast,
    # with a failure: those answers must not keep it in rotation.
    bin_dir, marker = shared_tmp / "breakable", shared_tmp / "broken"
    bin_dir.mkdir(mode=0o755)
    gcc = bin_dir / "gcc"
    gcc.write_text(_BREAKABLE_GCC.format(gcc=shutil.which("gcc"), marker=marker))
    gcc.chmod(0o755)
    server = start_server("--jobs", "8", "--compiler", "gcc", path_prepend=str(bin_dir))
    balancer = start_balancer(
        "--backend", f"127.0.0.1:{server.port},status={server.stats_port}",
        "--probe-interval", str(PROBE_INTERVAL_S),
    )  # fmt: skip
    balancer.wait_healthy(1)
    name = f"127.0.0.1:{server.port}"
    marker.touch()

    async def failing_jobs() -> int | None:
        """How many failed jobs it took until the backend was down (None: never)."""
        job = Request(1, ("gcc", "-c", "job.c", "-o", "job.o"), b"int f(void) { return 1; }\n")
        for sent in range(JOBS):
            state = await asyncio.to_thread(lambda: balancer.backend(name)["state"])
            if state == "down":
                return sent
            with contextlib.suppress(ClientError):
                reply = await compile_remote("127.0.0.1", balancer.port, job, timeout_s=30)
                assert reply.status != 0
        return None

    # Down while the failing jobs still flow: their replies did not skip the probes.
    assert asyncio.run(failing_jobs()) is not None
