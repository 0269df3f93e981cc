"""Faults never stall or fail a build: no job waits on a hung backend, and a busy
backend is never mistaken for a dead one."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from client import Stalled, TurnedAway, compile_remote
from tests.support.compilers import running, write_fake_compilers
from tests.support.distcc import CLIENT_TIMEOUT_S, distcc_env
from tests.support.fault_relay import RelayThread
from tests.support.projects import assert_identical_to_local, write_c_project
from tests.support.servers import (
    BalancerProcess,
    Distccd,
    ServerProcess,
    StartBalancer,
    StartServer,
    wait_until,
)
from wire import Reply, Request

pytestmark = pytest.mark.integration

SOURCE = b"int job(int x) { return x * 7; }\n"
# Reports and health are read fast, so that a hung backend leaves rotation in a second
# or two; late and tail hedging are left out unless a test asks for them.
QUICK_HEALTH = ("--poll-interval", "0.2", "--probe-interval", "0.5", "--fall", "2",
                "--probe-timeout", "1", "--idle-probe-interval", "0.5",
                "--report-wait", "0.5")  # fmt: skip


def _bin(shared_tmp: Path, name: str, seconds: float) -> Path:
    """A toolchain dir whose slow-cc sleeps ``seconds`` before compiling for real."""
    bin_dir = shared_tmp / name / "bin"
    bin_dir.parent.mkdir(mode=0o755)
    write_fake_compilers(bin_dir, shared_tmp / f"{name}-markers", slow_seconds=seconds)
    return bin_dir


def _spec(server: ServerProcess, port: int | None = None, status: int | None = None) -> str:
    return f"127.0.0.1:{port or server.port},status={status or server.stats_port}"


def _reload(balancer: BalancerProcess, config: Path, specs: list[str], count: int) -> None:
    config.write_text("backend = [" + ", ".join(f'"{s}"' for s in specs) + "]\n")
    balancer.proc.send_signal(signal.SIGHUP)
    balancer.wait_healthy(count)


@pytest.fixture
def stopped() -> Iterator[list[ServerProcess]]:
    """Servers a test SIGSTOPs: continued again afterwards, so they can be stopped."""
    held: list[ServerProcess] = []
    yield held
    for server in held:
        if server.proc.poll() is None:
            os.kill(server.proc.pid, signal.SIGCONT)


def _in_background(
    coroutine_factory: Callable[[], Coroutine[Any, Any, object]],
) -> tuple[threading.Thread, list[object]]:
    result: list[object] = []

    def run() -> None:
        try:
            result.append(asyncio.run(coroutine_factory()))
        except Exception as exc:  # handed to the test, which fails with it
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def _job(
    balancer: BalancerProcess, compiler: str = "slow-cc"
) -> Callable[[], Coroutine[Any, Any, Reply]]:
    async def go() -> Reply:
        request = Request(1, (compiler, "-c", "job.c", "-o", "job.o"), SOURCE)
        return await compile_remote("127.0.0.1", balancer.port, request, timeout_s=90)

    return go


@pytest.mark.parametrize("fault", ["sigstop", "blackhole"])
def test_a_failed_primary_with_its_hedge_on_a_hung_backend_completes_on_a_third(
    start_server: StartServer,
    start_balancer: StartBalancer,
    shared_tmp: Path,
    stopped: list[ServerProcess],
    fault: str,
) -> None:
    """The scenario a user hit: the primary's server dies, the hedge sits on a server
    that then hangs. Before, the job waited on the hedge until the client gave up."""
    slow_bin, fast_bin = _bin(shared_tmp, "slow", 60), _bin(shared_tmp, "fast", 0)
    first = start_server("--jobs", "1", "--compiler", "slow-cc", "--compiler", "gcc",
                         path_prepend=str(slow_bin))  # fmt: skip
    hung = start_server("--jobs", "1", "--compiler", "slow-cc", "--compiler", "gcc",
                        path_prepend=str(slow_bin))  # fmt: skip
    third = start_server("--jobs", "1", "--compiler", "slow-cc", "--compiler", "gcc",
                         path_prepend=str(fast_bin))  # fmt: skip
    relays = [RelayThread(("127.0.0.1", hung.port)), RelayThread(("127.0.0.1", hung.stats_port))]
    hung_spec = _spec(hung, relays[0].port, relays[1].port)
    config = shared_tmp / "balancer.toml"
    config.write_text(f'backend = ["{_spec(first)}"]\n')
    balancer = start_balancer("--config", str(config), *QUICK_HEALTH, "--hedge-after", "1",
                              "--tail-hedge", "0", "--queue-timeout", "30")  # fmt: skip
    try:
        balancer.wait_healthy(1)
        thread, result = _in_background(_job(balancer))
        wait_until(lambda: running(slow_bin / "slow-cc"), 30, "the job on the first server")
        _reload(balancer, config, [_spec(first), hung_spec], 2)
        # Late after a second, the job is hedged to the only other backend.
        wait_until(lambda: len(running(slow_bin / "slow-cc")) >= 4, 30, "the hedge running")
        if fault == "sigstop":
            os.kill(hung.proc.pid, signal.SIGSTOP)
            stopped.append(hung)
        else:
            for relay in relays:
                relay.set_mode("blackhole")
        _reload(balancer, config, [_spec(first), hung_spec, _spec(third)], 2)
        first.proc.kill()  # the primary's server dies: its attempt fails
        thread.join(CLIENT_TIMEOUT_S)
        assert result and isinstance(result[0], Reply), result
        reply = result[0]
        assert reply.status == 0 and reply.obj.startswith(b"\x7fELF"), reply.stderr
        done = wait_until(lambda: balancer.event("job_done"), 10, "the job's summary line")
        assert done["backend"] == f"127.0.0.1:{third.port}", done
        tries = {t["backend"]: t["result"] for t in done["tries"]}
        # A server that dies after the request closes without a reply, which looks just
        # like a busy one turning it away.
        assert tries[f"127.0.0.1:{first.port}"] in ("turned_away", "failed: TurnedAway") or (
            tries[f"127.0.0.1:{first.port}"].startswith("failed")
        ), tries
        assert tries[hung_spec.split(",")[0]] == "closed", tries
        assert tries[f"127.0.0.1:{third.port}"] == "ok"
    finally:
        for relay in relays:
            relay.close()


def test_jobs_on_a_backend_that_hangs_complete_elsewhere_and_none_fails(
    start_server: StartServer,
    start_balancer: StartBalancer,
    shared_tmp: Path,
    stopped: list[ServerProcess],
    tmp_path: Path,
) -> None:
    slow_bin, fast_bin = _bin(shared_tmp, "slow", 60), _bin(shared_tmp, "fast", 0)
    hung = start_server("--jobs", "5", "--compiler", "slow-cc", "--compiler", "gcc",
                        path_prepend=str(slow_bin))  # fmt: skip
    spare = start_server("--jobs", "5", "--compiler", "slow-cc", "--compiler", "gcc",
                         path_prepend=str(fast_bin))  # fmt: skip
    config = shared_tmp / "balancer.toml"
    config.write_text(f'backend = ["{_spec(hung)}"]\n')
    # Hedging is kept out of the way: only moving the jobs off a backend that left
    # rotation can save them.
    balancer = start_balancer("--config", str(config), *QUICK_HEALTH, "--hedge-min", "120",
                              "--tail-hedge", "0", "--queue-timeout", "30")  # fmt: skip
    balancer.wait_healthy(1)
    project = write_c_project(tmp_path / "proj", modules=4)  # 5 files
    env = distcc_env(f"127.0.0.1:{balancer.port}/5", fallback=False)
    env["PATH"] = f"{fast_bin}:{env['PATH']}"  # the client preprocesses with slow-cc -E
    make = subprocess.Popen(
        ["timeout", str(CLIENT_TIMEOUT_S), "make", "-j5", "CC=distcc slow-cc"], cwd=project,
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_until(lambda: len(running(slow_bin / "slow-cc")) >= 10, 60, "five jobs on one server")
    _reload(balancer, config, [_spec(hung), _spec(spare)], 2)
    os.kill(hung.proc.pid, signal.SIGSTOP)
    stopped.append(hung)
    _, stderr = make.communicate(timeout=CLIENT_TIMEOUT_S)
    assert make.returncode == 0, stderr  # fallback is off: nothing compiled locally
    assert_identical_to_local(project, "gcc")
    totals = balancer.totals()
    assert totals["failed"] == 0 and totals["turned_away"] == 0, totals
    assert totals["rescues"] >= 5, totals


def test_a_backend_that_trickles_its_reply_is_caught_by_the_idle_deadline(
    start_server: StartServer, start_balancer: StartBalancer, shared_tmp: Path
) -> None:
    slow_bin = _bin(shared_tmp, "slow", 1)
    trickler = start_server("--jobs", "2", "--compiler", "slow-cc", "--compiler", "gcc",
                            path_prepend=str(slow_bin))  # fmt: skip
    other = start_server("--jobs", "2", "--compiler", "slow-cc", "--compiler", "gcc",
                         path_prepend=str(slow_bin))  # fmt: skip
    relay = RelayThread(("127.0.0.1", trickler.port))
    try:
        # The client library alone: the trickle is caught, as a stall, not a timeout.
        relay.set_mode("trickle")
        with pytest.raises(Stalled, match="stalled"):
            asyncio.run(compile_remote(
                "127.0.0.1", relay.port, Request(1, ("gcc", "-c", "a.c"), SOURCE),
                timeout_s=60, idle_timeout_s=2,
            ))  # fmt: skip
        relay.set_mode("pass")
        config = shared_tmp / "balancer.toml"
        config.write_text(f'backend = ["{_spec(trickler, relay.port)}"]\n')
        balancer = start_balancer("--config", str(config), "--backend-idle-timeout", "2",
                                  "--probe-interval", "60", "--fall", "5", "--tail-hedge", "0",
                                  "--hedge-min", "120")  # fmt: skip
        balancer.wait_healthy(1)
        thread, result = _in_background(_job(balancer))
        wait_until(lambda: running(slow_bin / "slow-cc"), 30, "the job on the trickler")
        relay.set_mode("trickle")
        _reload(balancer, config, [_spec(trickler, relay.port), _spec(other)], 2)
        thread.join(CLIENT_TIMEOUT_S)
        assert result and isinstance(result[0], Reply), result
        assert result[0].status == 0 and result[0].obj.startswith(b"\x7fELF")
        done = wait_until(lambda: balancer.event("job_done"), 10, "the job's summary line")
        tries = [(t["backend"], t["result"]) for t in done["tries"]]
        assert tries[0] == (f"127.0.0.1:{relay.port}", "failed: Stalled"), tries
        assert tries[-1] == (f"127.0.0.1:{other.port}", "ok"), tries
    finally:
        relay.close()


def _heavy_source(tmp: Path) -> Path:
    """A C file gcc -O3 takes a few seconds over on this machine."""
    body = "\n".join(
        f"int f{i}(int *a, int n) {{ int s = 0; for (int j = 0; j < n; j++) {{ s += a[j] * {i};"
        f" if (s > {i}) s ^= j; }} for (int k = 0; k < n; k++) a[k] += s; return s; }}"
        for i in range(180)
    )
    path = tmp / "heavy.c"
    path.write_text(body + "\n")
    return path


@pytest.mark.parametrize("kind", ["distccd", "distlb"])
def test_a_backend_full_of_long_compiles_stays_in_rotation(
    start_server: StartServer,
    start_balancer: StartBalancer,
    distccd_stats: Distccd,
    tmp_path: Path,
    kind: str,
) -> None:
    """Every slot busy on compiles longer than probe-interval x fall: the probes that
    would wait behind them (distccd queues them) are not failures, and a job that
    finds it full waits instead of being turned away."""
    if kind == "distccd":
        spec = f"127.0.0.1:{distccd_stats.port},status={distccd_stats.stats_port},kind=distccd"
    else:
        server = start_server("--jobs", "2")
        spec = _spec(server)
    balancer = start_balancer("--backend", spec, "--probe-interval", "0.3", "--fall", "2",
                              "--probe-timeout", "0.5", "--queue-timeout", "60",
                              "--tail-hedge", "0", "--hedge-min", "120")  # fmt: skip
    balancer.wait_healthy(1)
    source = _heavy_source(tmp_path)
    env = distcc_env(f"127.0.0.1:{balancer.port}/3", fallback=False)
    clients = [
        subprocess.Popen(
            ["timeout", str(CLIENT_TIMEOUT_S), "distcc", "gcc", "-O3", "-c", source.name,
             "-o", f"heavy{i}.o"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(3)
    ]  # fmt: skip
    for client in clients:
        _, stderr = client.communicate(timeout=CLIENT_TIMEOUT_S)
        assert client.returncode == 0, stderr  # fallback is off: all compiled remotely
    downs = [e for e in balancer.events("backend_state") if e["state"] == "down"]
    assert downs == [], downs
    totals = balancer.totals()
    assert totals["ok"] == 3 and totals["turned_away"] == 0, totals
    assert all((tmp_path / f"heavy{i}.o").exists() for i in range(3))


def test_a_job_that_hangs_on_a_backend_that_compiles_others_ends_without_charging_it(
    start_balancer: StartBalancer,
) -> None:
    """A source can make a compile hang (a line marker naming /dev/ptmx: gcc's diagnostic
    then reads a pty master) on a real distccd, which has no sandbox. The job misses its
    deadline, but the backend compiled its probes meanwhile: the job ends (its client
    compiles it), the backend is not charged, and the job is not sent on to hang another
    backend's slot (a review took every backend out of rotation so)."""
    daemon = Distccd(jobs=4, stats=True)  # (room for probes beside the hanging job)
    try:
        name = f"127.0.0.1:{daemon.port}"
        balancer = start_balancer(
            "--backend", f"{name},status={daemon.stats_port},kind=distccd", *QUICK_HEALTH,
            "--attempt-deadline-min", "3", "--hedge-min", "120", "--tail-hedge", "0",
            # The deadline is 3 s, or the first job's latency if that was longer on a
            # loaded machine (--attempt-deadline-factor times it: at the default 20 that
            # once came to past the client's minute); probes get 3 s to prove the backend.
            "--attempt-deadline-factor", "1", "--probe-timeout", "3",
        )  # fmt: skip
        balancer.wait_healthy(1)
        good = Request(1, ("gcc", "-c", "g.c", "-o", "g.o"), SOURCE)
        # (a job that finished: the backend's latency history, whence a deadline of
        # --attempt-deadline-min, or that job's latency)
        reply = asyncio.run(compile_remote("127.0.0.1", balancer.port, good, timeout_s=60))
        assert reply.status == 0
        hanging = Request(1, ("gcc", "-c", "h.c", "-o", "h.o"), b'# 1 "/dev/ptmx"\nint x = ;\n')
        with pytest.raises(TurnedAway):  # (closed unanswered: the client compiles it)
            asyncio.run(compile_remote("127.0.0.1", balancer.port, hanging, timeout_s=60))
        # (its line, not the first job's: the log is read by a thread)
        lines = wait_until(lambda: [e for e in balancer.events("job_done")
                                    if e.get("input") == "h.c"], 10, "its line")  # fmt: skip
        done = lines[-1]
        assert done["outcome"] == "failed", done
        assert [t["result"] for t in done["tries"]] == ["deadline"]  # not sent on
        assert "while the backend compiled others" in done["reason"]
        backend = balancer.backend(name)
        assert backend["failures"] == 0 and backend["state"] == "up", backend
        reply = asyncio.run(compile_remote("127.0.0.1", balancer.port, good, timeout_s=60))
        assert reply.status == 0 and reply.obj.startswith(b"\x7fELF")
    finally:
        daemon.stop()
