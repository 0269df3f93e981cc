"""The Prometheus side, checked by Prometheus' own promtool: the shipped scrape config
and alert rules, and the metrics our server, balancer and monitor expose."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from client import compile_remote
from client.prober import probe_request
from tests.support.servers import BalancerProcess, ServerProcess

pytestmark = pytest.mark.integration

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "prometheus"


def _promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: run scripts/bootstrap.sh (Debian's prometheus)")
    return subprocess.run(
        [promtool, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def _get(port: int, path: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return str(response.read().decode())


def test_shipped_scrape_config_and_alert_rules_are_valid() -> None:
    result = _promtool("check", "config", str(CONFIGS / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "7 rules found" in result.stdout + result.stderr


def test_server_balancer_and_monitor_metrics_pass_promtool(
    start_server: type[ServerProcess], start_balancer: type[BalancerProcess], tmp_path: Path
) -> None:
    server = start_server("--jobs", "2")
    balancer = start_balancer("--backend", f"127.0.0.1:{server.port},status={server.stats_port}")
    balancer.wait_healthy(1)
    reply = asyncio.run(compile_remote("127.0.0.1", balancer.port, probe_request("gcc")))
    assert reply.status == 0
    textfile = tmp_path / "distlb.prom"
    monitor = subprocess.run(
        [str(Path(sys.executable).with_name("distlb-monitor")), "--probes", "1",
         "--textfile", str(textfile), f"127.0.0.1:{server.port}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert monitor.returncode == 0, monitor.stdout + monitor.stderr
    pages = {
        "server": _get(server.stats_port, "/metrics"),
        "balancer": _get(balancer.stats_port, "/metrics"),
        "monitor": textfile.read_text(),
    }
    assert 'distlb_balancer_jobs_total{outcome="ok"} 1.0' in pages["balancer"]
    assert "distlb_backend_up" in pages["balancer"] and "distlb_server_slots" in pages["server"]
    assert "distlb_monitor_up" in pages["monitor"]
    for name, text in pages.items():
        result = _promtool("check", "metrics", stdin=text)
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
