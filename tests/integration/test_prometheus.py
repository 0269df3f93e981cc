"""The Prometheus side, checked by Prometheus' own promtool: the shipped scrape config
and alert rules, and the metrics our server, balancer and monitor expose."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from client import compile_remote
from client.prober import probe_request
from tests.support.redis import RedisServer
from tests.support.secrets import farm_secret
from tests.support.servers import StartBalancer, StartServer
from wire import Request

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
    assert "8 rules found" in result.stdout + result.stderr


def test_server_balancer_and_monitor_metrics_pass_promtool(
    start_server: StartServer, start_balancer: StartBalancer, tmp_path: Path
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


GRAFANA = CONFIGS.parent / "grafana" / "distlb.json"
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m", "$balancer_job": "distlb-balancer", "$server_job": "distlb-server",
    "$backend": ".*",
}  # fmt: skip
FROM_PROMETHEUS = {"up"}
"""Series Prometheus makes itself, not in any /metrics."""


def _board_queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and variable query, variables filled in."""
    queries = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            queries.append((f"{panel['title']} {target['refId']}", target["expr"]))
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            inner = re.fullmatch(r"label_values\((.*), *\w+\)", variable["query"]["query"])
            assert inner, variable
            queries.append((f"variable {variable['name']}", inner.group(1)))
    filled = []
    for where, query in queries:
        for name, value in sorted(GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
            query = query.replace(name, value)
        assert "$" not in query, f"{where}: a variable the test does not know: {query}"
        filled.append((where, query))
    return filled


def test_the_grafana_board_queries_parse_and_name_only_metrics_we_export(
    start_server: StartServer, start_balancer: StartBalancer,
    redis_server: RedisServer, tmp_path: Path,
) -> None:  # fmt: skip
    board = json.loads(GRAFANA.read_text())
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    queries = _board_queries(board)
    assert len(queries) > 30
    # promtool parses each one (as a recording rule: `check rules` parses its PromQL).
    rules = {"groups": [{"name": "grafana", "rules": [
        {"record": f"distlb_board:query_{i}", "expr": query} for i, (_, query) in enumerate(queries)
    ]}]}  # fmt: skip
    rules_file = tmp_path / "board-rules.yml"
    rules_file.write_text(json.dumps(rules))  # (JSON is YAML)
    checked = _promtool("check", "rules", str(rules_file))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{len(queries)} rules found" in checked.stdout + checked.stderr

    # Every metric they name is in the live /metrics of a balancer (with a Redis cache)
    # or a server, once a job has gone through.
    server = start_server("--jobs", "2")
    balancer = start_balancer(
        "--backend", f"127.0.0.1:{server.port},status={server.stats_port}",
        "--cache-redis", redis_server.url, "--cache-secret-file", str(farm_secret()),
    )  # fmt: skip
    balancer.wait_healthy(1)
    job = Request(1, ("gcc", "-c", "g.c", "-o", "g.o"), b"int g(void) { return 2; }\n")
    for _ in range(2):  # a miss, then a hit (not a probe: the server counts those apart)
        reply = asyncio.run(compile_remote("127.0.0.1", balancer.port, job))
        assert reply.status == 0
    exported = set()
    for port in (balancer.stats_port, server.stats_port):
        for line in _get(port, "/metrics").splitlines():
            if line and not line.startswith("#"):
                exported.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    for where, query in queries:
        named = set(re.findall(r"\b((?:distlb|process)_[a-z0-9_]+|up)\b(?=\s*[{\[)]|$)", query))
        assert named, f"{where}: no metric in {query}"
        missing = named - exported - FROM_PROMETHEUS
        assert not missing, f"{where}: {sorted(missing)} not exported"
