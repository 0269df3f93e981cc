"""The Prometheus side, checked by Prometheus' own promtool: the shipped scrape config
and alert rules, and the metrics our server, balancer and monitor expose."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from client import compile_remote
from client.prober import probe_request
from tests.support.redis import RedisServer
from tests.support.secrets import farm_secret
from tests.support.servers import StartBalancer, StartServer, wait_until
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
    assert "9 rules found" in result.stdout + result.stderr


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
    # or a server (with a disk cache), once a job has gone through.
    server = start_server("--jobs", "2", "--cache-dir", str(tmp_path / "server-cache"),
                          "--cache-secret-file", str(farm_secret()))  # fmt: skip
    balancer = start_balancer(
        "--backend", f"127.0.0.1:{server.port},status={server.stats_port}",
        "--cache-redis", redis_server.url, "--cache-secret-file", str(farm_secret()),
    )  # fmt: skip
    balancer.wait_healthy(1)
    job = Request(1, ("gcc", "-c", "g.c", "-o", "g.o"), b'# 0 "g.c"\nint g(void) { return 2; }\n')
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


VERSION = tomllib.loads((CONFIGS.parents[1] / "pyproject.toml").read_text())["project"]["version"]


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page: (name, sorted labels) -> value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_jobs_probes_cache_build_and_reload_series_on_both_daemons(
    start_server: StartServer, start_balancer: StartBalancer, tmp_path: Path
) -> None:
    started = time.time()
    server = start_server("--jobs", "2", "--cache-dir", str(tmp_path / "cache"),
                          "--cache-secret-file", str(farm_secret()))  # fmt: skip
    backend = f"127.0.0.1:{server.port}"
    balancer = start_balancer("--backend", f"{backend},status={server.stats_port}")
    balancer.wait_healthy(1)  # (by a probe the server counts as one)
    job = Request(1, ("gcc", "-c", "m.c", "-o", "m.o"), b'# 0 "m.c"\nint m(void) { return 3; }\n')

    async def jobs_and_a_probe() -> None:
        for _ in range(2):  # compiled, then from the server's disk cache
            reply = await compile_remote("127.0.0.1", balancer.port, job, timeout_s=60)
            assert reply.status == 0 and reply.obj
            # (stored in the background: the second job must find it there)
            await asyncio.to_thread(wait_until, lambda: server.status()["cache"]["stored"] == 1,
                                    10, "the entry stored")  # fmt: skip
        reply = await compile_remote("127.0.0.1", server.port, probe_request("gcc"))
        assert reply.status == 0 and reply.obj

    asyncio.run(jobs_and_a_probe())
    ended = time.time()

    srv = _samples(_get(server.stats_port, "/metrics"))
    assert srv[("distlb_server_jobs_total", (("outcome", "ok"),))] == 2
    assert ("distlb_server_jobs_total", (("outcome", "accepted"),)) not in srv
    assert srv[("distlb_server_jobs_accepted_total", ())] == 1  # (the hit took no slot)
    probes = srv[("distlb_server_probes_total", (("outcome", "ok"),))]
    assert probes >= 2 and probes == server.status()["probes"]["ok"]
    assert srv[("distlb_server_cache_hits_total", ())] == 1
    assert srv[("distlb_server_cache_misses_total", ())] == 1
    assert srv[("distlb_server_cache_rejected_total", ())] == 0
    assert srv[("distlb_build_info", (("role", "server"), ("version", VERSION)))] == 1
    assert srv[("distlb_config_last_reload_successful", ())] == 1
    assert started <= srv[("distlb_config_last_reload_success_timestamp_seconds", ())] <= ended

    bal = _samples(_get(balancer.stats_port, "/metrics"))
    assert bal[("distlb_balancer_jobs_total", (("outcome", "ok"),))] == 2
    assert bal[("distlb_balancer_jobs_accepted_total", ())] == 2
    assert bal[("distlb_backend_sent_total", (("backend", backend),))] == 2
    assert bal[("distlb_backend_probes_total", (("backend", backend),))] >= 1
    assert bal[("distlb_build_info", (("role", "balancer"), ("version", VERSION)))] == 1
    assert bal[("distlb_config_last_reload_successful", ())] == 1
    assert started <= bal[("distlb_config_last_reload_success_timestamp_seconds", ())] <= ended
    reload = balancer.status()["reload"]
    assert reload["successful"] is True and reload["reason"] == ""


def test_the_workers_merged_metrics_keep_build_and_reload_gauges_whole(
    start_server: StartServer, start_balancer: StartBalancer
) -> None:
    started = time.time()
    server = start_server("--jobs", "2")
    balancer = start_balancer(
        "--backend", f"127.0.0.1:{server.port},status={server.stats_port}", "--workers", "2"
    )  # fmt: skip
    balancer.wait_healthy(1)
    wait_until(lambda: balancer.status()["workers"]["answered"] == 2, 30, "both workers")

    merged = _samples(_get(balancer.stats_port, "/metrics"))

    assert merged[("distlb_build_info", (("role", "balancer"), ("version", VERSION)))] == 1
    assert merged[("distlb_config_last_reload_successful", ())] == 1
    stamp = merged[("distlb_config_last_reload_success_timestamp_seconds", ())]
    assert started <= stamp <= time.time()
