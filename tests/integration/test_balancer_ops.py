"""Operating the balancer: admin HTTP, the dashboard in a real browser, SIGHUP, SIGTERM."""

from __future__ import annotations

import signal
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.compilers import running
from tests.support.distcc import start_distcc
from tests.support.servers import (
    ServerProcess,
    StartBalancer,
    StartServer,
    wait_until,
)

pytestmark = pytest.mark.integration

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _spec(server: ServerProcess) -> str:
    return f"127.0.0.1:{server.port},status={server.stats_port}"


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_healthz_follows_backend_health_and_metrics_export_backends(
    start_server: StartServer, start_balancer: StartBalancer
) -> None:
    server = start_server("--jobs", "2")
    balancer = start_balancer("--backend", _spec(server))
    balancer.wait_healthy(1)
    base = f"http://127.0.0.1:{balancer.stats_port}"
    assert _http_status(base + "/healthz") == 200
    metrics = balancer.http("/metrics")
    assert f'distlb_backend_up{{backend="127.0.0.1:{server.port}"}} 1.0' in metrics
    assert f'distlb_backend_slots{{backend="127.0.0.1:{server.port}"}} 2.0' in metrics

    server.stop()
    wait_until(lambda: balancer.totals()["healthy_backends"] == 0, 20, "the backend down")
    assert _http_status(base + "/healthz") == 503


def test_sighup_reloads_backends_without_dropping_jobs(
    start_server: StartServer,
    start_balancer: StartBalancer,
    fake_compilers: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    bin_dir, _ = fake_compilers
    first = start_server(
        "--jobs", "2", "--compiler", "slow-cc", "--compiler", "gcc", path_prepend=str(bin_dir)
    )
    second = start_server("--jobs", "2")
    config = tmp_path / "balancer.toml"
    config.write_text(f'backend = ["{_spec(first)}"]\nprobe-compiler = "gcc"\n')
    balancer = start_balancer(config_file=config)
    balancer.wait_healthy(1)
    (tmp_path / "job.c").write_text("int job(void) { return 1; }\n")
    client = start_distcc(
        ["slow-cc", "-c", "job.c", "-o", "job.o"],
        hosts=f"127.0.0.1:{balancer.port}",
        cwd=tmp_path,
        path_prepend=bin_dir,
    )
    wait_until(lambda: running(bin_dir / "slow-cc"), 30, "the slow job to start")
    config.write_text(f'backend = ["{_spec(second)}"]\n')
    balancer.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: [b["name"] for b in balancer.status()["backends"]]
               == [f"127.0.0.1:{second.port}"], 10, "the new backend list")  # fmt: skip
    _, stderr = client.communicate(timeout=60)
    assert client.returncode == 0, stderr
    assert balancer.logged("reloaded")["backends"] == [f"127.0.0.1:{second.port}"]


def test_sigterm_drains_jobs_in_flight(
    start_server: StartServer,
    start_balancer: StartBalancer,
    fake_compilers: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    bin_dir, _ = fake_compilers
    server = start_server("--jobs", "2", "--compiler", "slow-cc", "--compiler", "gcc",
                          path_prepend=str(bin_dir))  # fmt: skip
    balancer = start_balancer("--backend", _spec(server))
    balancer.wait_healthy(1)
    (tmp_path / "job.c").write_text("int job(void) { return 2; }\n")
    client = start_distcc(
        ["slow-cc", "-c", "job.c", "-o", "job.o"],
        hosts=f"127.0.0.1:{balancer.port}",
        cwd=tmp_path,
        path_prepend=bin_dir,
    )
    wait_until(lambda: running(bin_dir / "slow-cc"), 30, "the slow job to start")
    balancer.proc.send_signal(signal.SIGTERM)
    _, stderr = client.communicate(timeout=60)
    assert client.returncode == 0, stderr
    assert balancer.proc.wait(30) == 0
    assert balancer.logged("balancer_stopped")["totals"]["ok"] == 1
