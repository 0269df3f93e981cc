"""Tail hedging with real servers: a job stuck on a slow backend is backed up on a much
faster one as soon as that one comes free, and the slow compile is killed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from client import compile_remote
from client.prober import PROBE_SOURCE
from tests.support.compilers import alive, running, write_fake_compilers
from tests.support.servers import (
    StartBalancer,
    StartServer,
    wait_until,
)
from wire import Request

pytestmark = pytest.mark.integration

SLOW_S = 30.0  # the slow backend's compile: far beyond the client's patience below
FAST_S = 1.0  # the fast backend's compile (slow-cc there sleeps this long)
CLIENT_TIMEOUT_S = 15.0


def _slow_cc_request(name: str) -> Request:
    return Request(1, ("slow-cc", "-c", f"{name}.c", "-o", f"{name}.o"), PROBE_SOURCE)


def test_a_job_on_a_slow_backend_is_backed_up_when_a_fast_one_frees(
    start_server: StartServer,
    start_balancer: StartBalancer,
    shared_tmp: Path,
) -> None:
    slow_bin, fast_bin = shared_tmp / "slow" / "bin", shared_tmp / "fast" / "bin"
    slow_bin.parent.mkdir(mode=0o755)
    fast_bin.parent.mkdir(mode=0o755)
    write_fake_compilers(slow_bin, shared_tmp / "slow-markers", slow_seconds=SLOW_S)
    write_fake_compilers(fast_bin, shared_tmp / "fast-markers", slow_seconds=FAST_S)
    slow = start_server("--jobs", "2", "--compiler", "slow-cc", "--compiler", "gcc",
                        path_prepend=str(slow_bin))  # fmt: skip
    fast = start_server("--jobs", "1", "--compiler", "slow-cc", "--compiler", "gcc",
                        path_prepend=str(fast_bin))  # fmt: skip
    # The fast one is known to be 4 x faster by its weight (no latency history yet);
    # late hedging is pushed out of the way so that only the tail hedge can help.
    balancer = start_balancer(
        "--backend", f"127.0.0.1:{slow.port},status={slow.stats_port}",
        "--backend", f"127.0.0.1:{fast.port},status={fast.stats_port},weight=4",
        "--poll-interval", "0.1", "--hedge-min", "120",
    )  # fmt: skip
    balancer.wait_healthy(2)
    fast_name = f"127.0.0.1:{fast.port}"

    def fast_free() -> int:
        free: int = next(b["free"] for b in balancer.status()["backends"] if b["name"] == fast_name)
        return free

    async def scenario() -> bytes:
        # Fill the fast backend directly, so the balancer's job must start on the slow one.
        hold = asyncio.create_task(
            compile_remote("127.0.0.1", fast.port, _slow_cc_request("hold"), timeout_s=30)
        )
        await asyncio.to_thread(wait_until, lambda: fast_free() == 0, 10, "the fast one full")
        reply = await compile_remote(
            "127.0.0.1", balancer.port, _slow_cc_request("job"), timeout_s=CLIENT_TIMEOUT_S
        )
        assert (await hold).status == 0
        return reply.obj

    obj = asyncio.run(scenario())
    assert obj.startswith(b"\x7fELF")
    totals = balancer.totals()
    assert totals["tail_hedges"] == 1 and totals["hedge_wins"] == 1, totals
    # The balancer writes its line once the reply is on its way: wait for it.
    done = wait_until(lambda: balancer.event("job_done"), 10, "the job's summary line")
    assert done["backend"] == fast_name and done["hedged"] is True, done
    # The slow backend's copy was cancelled: its compile is killed, not left running.
    wait_until(lambda: slow.counters()["client_disconnect"] == 1, 10, "the slow copy killed")
    wait_until(lambda: alive(running(slow_bin / "slow-cc")) == [], 5, "the slow compile gone")
