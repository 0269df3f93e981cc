"""distlb-loadgen against a real distlb-server on loopback: bounded, counted, summarised."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from client.loadgen import Summary, sized_source
from tests.support.servers import StartServer

pytestmark = pytest.mark.integration

LOADGEN = Path(sys.executable).with_name("distlb-loadgen")


def _loadgen(*args: str) -> tuple[int, dict[str, Any]]:
    result = subprocess.run(
        [str(LOADGEN), *args, "--json"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.stdout.strip(), result.stderr
    return result.returncode, json.loads(result.stdout)


def test_sized_sources_compile_and_reach_their_size(tmp_path: Path) -> None:
    for size in (0, 20_000):
        source = tmp_path / f"s{size}.c"
        source.write_bytes(sized_source(size, seed=size))
        assert source.stat().st_size >= size
        subprocess.run(["gcc", "-c", str(source), "-o", str(source.with_suffix(".o"))],
                       check=True)  # fmt: skip


def test_summary_counts_outcomes_and_quantiles() -> None:
    summary = Summary()
    for ms in range(1, 101):
        summary.record("ok", float(ms))
    summary.record("turned_away")
    summary.record("failed", error="TimedOut")
    summary.seconds = 2.0
    data = summary.as_dict()
    assert (data["sent"], data["ok"], data["turned_away"], data["failed"]) == (102, 100, 1, 1)
    assert data["p50_ms"] == 51.0 and data["p99_ms"] == 100.0
    assert data["errors"] == {"TimedOut": 1}
    assert "turned_away" in summary.table()


def test_loadgen_runs_its_jobs_against_a_server_and_reports_them(
    start_server: StartServer,
) -> None:
    server = start_server("--jobs", "2")
    rc, data = _loadgen(f"127.0.0.1:{server.port}", "--jobs", "12", "--concurrency", "2",
                        "--size-kb", "8", "--lzo")  # fmt: skip
    assert rc == 0, data
    assert data["sent"] == 12 and data["ok"] + data["turned_away"] == 12, data
    assert data["ok"] >= 1 and data["failed"] == 0 and data["p50_ms"] is not None


def test_loadgen_counts_turn_aways_from_a_full_server_and_stops_at_its_deadline(
    start_server: StartServer,
) -> None:
    server = start_server("--jobs", "1")
    rc, data = _loadgen(f"127.0.0.1:{server.port}", "--jobs", "100000", "--concurrency", "6",
                        "--duration", "3")  # fmt: skip
    assert rc == 0, data
    assert data["failed"] == 0 and data["ok"] >= 1, data
    assert data["turned_away"] >= 1, "six at once at a one-slot server: some must be turned away"
    assert data["sent"] < 100000 and float(str(data["seconds"])) < 3 + 60, data
