"""A job waiting for a slot makes the balancer read its backends' reports fast: a slot
freed by someone else's job is used within a fraction of the normal poll interval."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from client import compile_remote
from client.prober import PROBE_SOURCE
from tests.support.compilers import write_fake_compilers
from tests.support.servers import (
    StartBalancer,
    StartServer,
    wait_until,
)
from wire import Request

pytestmark = pytest.mark.integration

HOLD_S = 1.0  # the other client's compile that keeps the only slot busy
SLOW_POLL_S = 20.0  # far beyond the job's patience: only fast polling can help it
QUEUE_TIMEOUT_S = 6.0


def test_a_waiting_job_takes_a_slot_freed_by_another_client_at_once(
    start_server: StartServer, start_balancer: StartBalancer, shared_tmp: Path
) -> None:
    bin_dir = shared_tmp / "bin"
    write_fake_compilers(bin_dir, shared_tmp / "markers", slow_seconds=HOLD_S)
    server = start_server("--jobs", "1", "--compiler", "slow-cc", "--compiler", "gcc",
                          path_prepend=str(bin_dir))  # fmt: skip
    balancer = start_balancer(
        "--backend", f"127.0.0.1:{server.port},status={server.stats_port}",
        "--poll-interval", str(SLOW_POLL_S), "--fast-poll-interval", "0.1",
        "--queue-timeout", str(QUEUE_TIMEOUT_S),
        "--probe-interval", "60",  # no probe result may stand in for a report here
    )  # fmt: skip
    balancer.wait_healthy(1)
    name = f"127.0.0.1:{server.port}"
    hold = Request(1, ("slow-cc", "-c", "hold.c", "-o", "hold.o"), PROBE_SOURCE)
    job = Request(1, ("gcc", "-c", "job.c", "-o", "job.o"), PROBE_SOURCE)

    async def scenario() -> tuple[int, int]:
        # Another client, straight to the server, takes its only slot for HOLD_S.
        held = asyncio.create_task(compile_remote("127.0.0.1", server.port, hold, timeout_s=30))
        await asyncio.to_thread(
            wait_until, lambda: server.status()["busy"] == 1, 10, "the slot taken"
        )
        # The balancer's last report says free: our job is turned away, waits, and the
        # report read at once when it starts waiting says full. Only another report,
        # long before SLOW_POLL_S, can tell it the slot is free again.
        reply = await compile_remote("127.0.0.1", balancer.port, job, timeout_s=30)
        return (await held).status, reply.status

    assert asyncio.run(scenario()) == (0, 0)
    # The balancer writes its line once the reply is on its way: wait for it.
    done = wait_until(lambda: balancer.event("job_done"), 10, "the job's summary line")
    assert done["outcome"] == "ok" and done["backend"] == name, done
    assert done["queue_ms"] < QUEUE_TIMEOUT_S * 1000


IDLE_POLL_S = 600.0  # far beyond the test: only a job sent there can end the idle pace
OBSERVE_S = 2.0


def test_plain_polls_of_an_idle_backend_slow_down_and_a_job_sent_there_speeds_them_up(
    start_server: StartServer, start_balancer: StartBalancer
) -> None:
    """A backend without the long poll (here: --report-wait 0) that no job of ours runs
    on, while none waits, is polled at --idle-poll-interval, not every --poll-interval
    (200 such backends cost 4 % of a core); a job sent there brings its reports back at
    once."""
    server = start_server("--jobs", "2")
    balancer = start_balancer(
        "--backend", f"127.0.0.1:{server.port},status={server.stats_port}",
        "--report-wait", "0", "--poll-interval", "0.05",
        "--idle-poll-interval", str(IDLE_POLL_S), "--idle-probe-interval", str(IDLE_POLL_S),
    )  # fmt: skip
    balancer.wait_healthy(1)
    name = f"127.0.0.1:{server.port}"
    # (healthy: proven by its probes, then idle; at the normal pace this window would
    # hold some 40 reports)
    wait_until(lambda: balancer.backend(name)["probing"] == 0, 10, "the probes over")
    before = balancer.backend(name)["reports"]
    time.sleep(OBSERVE_S)  # an observation window, not a synchronisation
    idle = balancer.backend(name)["reports"]
    assert idle - before <= 1
    job = Request(1, ("gcc", "-c", "job.c", "-o", "job.o"), PROBE_SOURCE)
    reply = asyncio.run(compile_remote("127.0.0.1", balancer.port, job, timeout_s=30))
    assert reply.status == 0
    wait_until(lambda: balancer.backend(name)["reports"] > idle, 10,
               "reports read again once a job went there")  # fmt: skip
