"""Issue 3 acceptance: the real distcc client through distlb-balancer to real backends."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.distcc import distcc_env, run_distcc, run_make
from tests.support.projects import assert_identical_to_local, local_object, sources, write_c_project
from tests.support.servers import (
    Distccd,
    ServerProcess,
    StartBalancer,
    StartServer,
    hold_a_slot,
    wait_until,
)

pytestmark = pytest.mark.integration

MODULES = 47  # + main.c = 48 jobs


def _spec(server: ServerProcess, slots: int | None = None) -> str:
    return f"127.0.0.1:{server.port},status={server.stats_port}"


def _start_make(project: Path, hosts: str, jobs: int) -> subprocess.Popen[str]:
    env = distcc_env(hosts, fallback=False)
    return subprocess.Popen(
        ["timeout", "120", "make", f"-j{jobs}", "CC=distcc gcc"],
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.fixture
def big_project(tmp_path: Path) -> Path:
    return write_c_project(tmp_path / "big", modules=MODULES)


def test_build_through_balancer_to_three_backends_splits_by_slots(
    start_server: StartServer,
    start_balancer: StartBalancer,
    distccd_stats: Distccd,
    big_project: Path,
) -> None:
    four = start_server("--jobs", "4")
    two = start_server("--jobs", "2")
    daemon = f"127.0.0.1:{distccd_stats.port},status={distccd_stats.stats_port},kind=distccd"
    balancer = start_balancer("--backend", _spec(four), "--backend", _spec(two),
                              "--backend", daemon)  # fmt: skip
    balancer.wait_healthy(3)

    result = run_make(big_project, hosts=f"127.0.0.1:{balancer.port}/16,lzo", jobs=16)
    assert result.returncode == 0, result.stderr
    assert_identical_to_local(big_project)

    jobs = len(sources(big_project))
    totals = balancer.totals()
    assert totals["ok"] == jobs and totals["failed"] == totals["turned_away"] == 0
    done = {b["name"]: b["ok"] for b in balancer.status()["backends"]}
    assert sum(done.values()) == jobs
    # What the slots decide: each server is filled to its slots, never past them, and
    # every backend does part of the build. (How many jobs each does depends on load:
    # 2 cores run every backend here, so a server's per-job latency grows with its
    # jobs, and picking weighs latency; a ratio of the counts failed 1 run in 10.)
    assert min(done.values()) >= 0.05 * jobs, done
    assert four.status()["busy_max"] == 4 and two.status()["busy_max"] == 2, done


@pytest.mark.parametrize("fault", ["sigkill", "sigstop"])
def test_build_survives_a_backend_killed_or_hung_mid_build(
    start_server: StartServer,
    start_balancer: StartBalancer,
    big_project: Path,
    fault: str,
) -> None:
    servers = [start_server("--jobs", "2") for _ in range(3)]
    victim = servers[2]
    victim_name = f"127.0.0.1:{victim.port}"
    balancer = start_balancer(*(a for s in servers for a in ("--backend", _spec(s))),
                              "--hedge-min", "2")  # fmt: skip
    balancer.wait_healthy(3)

    started = time.monotonic()
    make = _start_make(big_project, f"127.0.0.1:{balancer.port}/12,lzo", jobs=12)
    try:
        wait_until(lambda: balancer.backend(victim_name)["ok"] >= 2, 60, "the victim to work")
        os.kill(victim.proc.pid, signal.SIGKILL if fault == "sigkill" else signal.SIGSTOP)
        _, stderr = make.communicate(timeout=120)
        elapsed = time.monotonic() - started
        assert make.returncode == 0, stderr
        assert_identical_to_local(big_project)
        wait_until(lambda: balancer.backend(victim_name)["state"] == "down", 10,
                   "the victim out of rotation")  # fmt: skip
        assert balancer.totals()["failed"] == 0
        # Stated bound: a hung backend costs a job at most --hedge-min (2 s) before it
        # is hedged, and leaves rotation after 2 failed probes: the build stays short.
        assert elapsed < 60, f"build took {elapsed:.1f} s"
        if fault == "sigstop":
            os.kill(victim.proc.pid, signal.SIGCONT)
            wait_until(lambda: balancer.backend(victim_name)["state"] == "up", 20,
                       "the resumed backend back after rise probes")  # fmt: skip
    finally:
        if make.poll() is None:
            make.kill()
            make.wait()
        if victim.proc.poll() is None:
            os.kill(victim.proc.pid, signal.SIGCONT)


@pytest.fixture
def held_slot() -> Iterator[list[socket.socket]]:
    holders: list[socket.socket] = []
    yield holders
    for sock in holders:
        sock.close()


def test_all_backends_full_turns_client_away_after_queue_timeout(
    start_server: StartServer,
    start_balancer: StartBalancer,
    held_slot: list[socket.socket],
    fake_compilers: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    bin_dir, _ = fake_compilers
    server = start_server("--jobs", "1", "--compiler", "hang-cc", "--compiler", "gcc",
                          path_prepend=str(bin_dir))  # fmt: skip
    balancer = start_balancer("--backend", _spec(server), "--queue-timeout", "1")
    balancer.wait_healthy(1)
    held_slot.append(hold_a_slot(server.port))
    wait_until(lambda: balancer.backend(f"127.0.0.1:{server.port}")["free"] == 0, 10,
               "the balancer to see the server full")  # fmt: skip

    (tmp_path / "f.c").write_text("int f(int x) { return x + 1; }\n")
    result = run_distcc(
        ["gcc", "-O2", "-c", "f.c", "-o", "f.o"],
        hosts=f"127.0.0.1:{balancer.port}",
        cwd=tmp_path,
        fallback=True,
    )
    assert result.returncode == 0, result.stderr
    assert "running locally instead" in result.stderr
    assert (tmp_path / "f.o").read_bytes() == local_object(tmp_path, tmp_path / "f.c", "gcc", "-O2")
    assert balancer.totals()["turned_away"] == 1
    event = balancer.logged("job_done")
    assert event["outcome"] == "turned_away" and event["ms"] >= 1000


def test_two_balancers_share_backends_without_overfilling_them(
    start_server: StartServer,
    start_balancer: StartBalancer,
    tmp_path: Path,
) -> None:
    servers = [start_server("--jobs", "2") for _ in range(2)]
    specs = [a for s in servers for a in ("--backend", _spec(s))]
    balancers = [start_balancer(*specs) for _ in range(2)]
    for balancer in balancers:
        balancer.wait_healthy(2)
    projects = [write_c_project(tmp_path / f"p{i}", modules=23) for i in range(2)]
    makes = [_start_make(p, f"127.0.0.1:{b.port}/8,lzo", jobs=8)
             for p, b in zip(projects, balancers, strict=True)]  # fmt: skip
    for make in makes:
        _, stderr = make.communicate(timeout=120)
        assert make.returncode == 0, stderr
    for project in projects:
        assert_identical_to_local(project)
    for server in servers:
        assert server.status()["busy_max"] <= 2


def test_malformed_requests_never_reach_a_backend(
    start_server: StartServer, start_balancer: StartBalancer
) -> None:
    from tests.integration.test_hostile_input import _crafted, _send

    server = start_server("--jobs", "2")
    balancer = start_balancer("--backend", _spec(server))
    balancer.wait_healthy(1)
    cases = _crafted()
    for payload in cases.values():
        assert _send(balancer.port, payload) == b""
    wait_until(lambda: balancer.totals()["bad_request"] == len(cases), 10, "all counted")
    assert all(e["reason"] for e in balancer.events("bad_request"))
    # The backend saw only the balancer's own health probes.
    inputs = {e["input"] for e in server.events("job_done")}
    assert inputs <= {"distlb-probe.c"}
    assert server.counters()["bad_request"] == 0
    assert balancer.backend(f"127.0.0.1:{server.port}")["sent"] == 0


def test_client_leaving_closes_the_backend_job_and_its_compile_dies(
    start_server: StartServer,
    start_balancer: StartBalancer,
    fake_compilers: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    from tests.support.compilers import alive, running

    bin_dir, _ = fake_compilers
    server = start_server("--jobs", "2", "--compiler", "hang-cc", "--compiler", "gcc",
                          path_prepend=str(bin_dir))  # fmt: skip
    balancer = start_balancer("--backend", _spec(server), "--hedge-after", "600")
    balancer.wait_healthy(1)
    (tmp_path / "h.c").write_text("int h(void) { return 0; }\n")
    env = distcc_env(f"127.0.0.1:{balancer.port}", fallback=False)
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    client = subprocess.Popen(
        ["timeout", "120", "distcc", "hang-cc", "-c", "h.c", "-o", "h.o"], cwd=tmp_path,
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        job = wait_until(lambda: running(bin_dir / "hang-cc"), 30, "the compile to start")
        os.killpg(client.pid, signal.SIGKILL)
        client.wait(10)
        wait_until(lambda: alive(job) == [], 5, "the backend's compile killed")
    finally:
        if client.poll() is None:
            os.killpg(client.pid, signal.SIGKILL)
            client.wait()
    wait_until(lambda: balancer.totals()["client_disconnect"] == 1, 5, "counted by the balancer")
    wait_until(lambda: server.counters()["client_disconnect"] == 1, 5, "and by the server")
    # Its line says where the job was when its client left: on the server (closed as it left).
    done = balancer.logged("job_done")
    assert done["outcome"] == "client_disconnect", done
    tries = [(t["backend"], t["result"]) for t in done["tries"]]
    assert tries == [(f"127.0.0.1:{server.port}", "closed")], done


def test_jobs_arriving_together_never_overfill_a_backend(
    start_server: StartServer,
    start_balancer: StartBalancer,
    fake_compilers: tuple[Path, Path],
) -> None:
    """Six jobs at once for two slots: two are sent, four wait for a slot (none is sent
    to be turned away). Each job's slot is counted in the same step as its pick, so
    jobs woken together see each other's choices."""
    import asyncio

    from client import compile_remote
    from wire import Request

    bin_dir, _ = fake_compilers
    server = start_server("--jobs", "2", "--compiler", "slow-cc", "--compiler", "gcc",
                          path_prepend=str(bin_dir))  # fmt: skip
    balancer = start_balancer("--backend", _spec(server), "--allow-compiler", "slow-cc",
                              "--queue-timeout", "60", "--tail-hedge", "0",
                              "--hedge-min", "120")  # fmt: skip
    balancer.wait_healthy(1)

    async def jobs() -> list[int]:
        async def one(i: int) -> int:
            request = Request(1, ("slow-cc", "-c", f"f{i}.c", "-o", f"f{i}.o"), b"int x;\n")
            return (await compile_remote("127.0.0.1", balancer.port, request, timeout_s=90)).status

        return await asyncio.gather(*(one(i) for i in range(6)))

    assert asyncio.run(jobs()) == [0] * 6
    counters = server.status()["counters"]
    assert counters["rejected_busy"] == 0, counters
    assert server.status()["busy_max"] == 2
    assert balancer.backend(f"127.0.0.1:{server.port}")["turned_away"] == 0
