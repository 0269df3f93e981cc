"""Issue 33: logs an operator can trust. Under systemd (``JOURNAL_STREAM`` names the
stream stderr is) every line starts with its syslog priority, which journald keeps as
the entry's priority, so ``journalctl -p warning`` shows warnings alone; anywhere else
the lines are plain JSON. The start line says the version. A balancer's job names its
file and the connection that joins it to the server's job; health probes log at
debug; a backend that never comes up says why, once."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from client import compile_remote
from client.prober import probe_request
from tests.support.distcc import run_distcc
from tests.support.servers import (
    StartBalancer,
    StartServer,
    free_port,
    role_command,
    wait_until,
)
from wire import Request

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def _start_server(tmp: Path, log: Path, journal: bool) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.pop("JOURNAL_STREAM", None)
    with open(log, "wb") as out:
        if journal:  # (what systemd sets when it connects stderr to the journal)
            st = os.fstat(out.fileno())
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        # --sandbox none logs a warning at start: one line of each priority
        return subprocess.Popen(
            [*role_command("server"), "--listen", "127.0.0.1", "--port", "0",
             "--stats-port", "0", "--tmp-dir", str(tmp), "--sandbox", "none",
             "--log-format", "json"],
            stdout=subprocess.DEVNULL, stderr=out, env=env,
        )  # fmt: skip


def _lines_until_ready(proc: subprocess.Popen[bytes], log: Path) -> list[str]:
    try:
        wait_until(lambda: b"server_ready" in log.read_bytes() or proc.poll() is not None, 30,
                   "the server's start line")  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(30)
    return log.read_text().splitlines()


def test_under_the_journal_each_line_carries_its_priority(server_tmp: Path) -> None:
    tmp, log = server_tmp, server_tmp.parent / "journal"
    lines = _lines_until_ready(_start_server(tmp, log, journal=True), log)

    by_event = {json.loads(line[3:])["event"]: line[:3] for line in lines}
    assert by_event["sandbox_off"] == "<4>"  # a warning
    assert by_event["server_ready"] == "<6>"  # info
    assert all(line[:3] in ("<4>", "<6>", "<3>", "<7>") for line in lines), lines


def test_elsewhere_the_lines_are_plain_json_and_the_start_line_has_the_version(
    server_tmp: Path,
) -> None:
    tmp, log = server_tmp, server_tmp.parent / "stderr"
    lines = _lines_until_ready(_start_server(tmp, log, journal=False), log)

    events = [json.loads(line) for line in lines]  # (a prefix would not parse)
    ready = next(e for e in events if e["event"] == "server_ready")
    assert ready["version"] == VERSION


def test_a_balancer_job_names_its_file_and_its_connection_joins_it_to_the_servers_job(
    start_server: StartServer, start_balancer: StartBalancer, tmp_path: Path
) -> None:
    server = start_server("--jobs", "2")
    balancer = start_balancer("--backend", f"127.0.0.1:{server.port},status={server.stats_port}")
    balancer.wait_healthy(1)
    (tmp_path / "joined.c").write_text("int joined(void) { return 7; }\n")

    result = run_distcc(["gcc", "-c", "joined.c", "-o", "joined.o"],
                        hosts=f"127.0.0.1:{balancer.port}", cwd=tmp_path)  # fmt: skip

    assert result.returncode == 0, result.stderr  # (fallback off: compiled remotely)
    done = balancer.logged("job_done")
    assert (done["outcome"], done["input"]) == ("ok", "joined.c")
    conn = done["backend_conn"]
    assert re.fullmatch(r"127\.0\.0\.1:\d+", conn), conn
    assert [t["backend_conn"] for t in done["tries"]] == [conn]
    # The server's job on that connection: the same file, every line of it with the peer
    theirs = wait_until(
        lambda: [e for e in server.events("job_done") if e.get("peer") == conn], 10,
        "the server's job_done for the balancer's connection",
    )  # fmt: skip
    assert len(theirs) == 1 and theirs[0]["input"] == "joined.c"
    lines = [e for e in server.events() if e.get("job_id") == theirs[0]["job_id"]]
    assert lines and all(e["peer"] == conn for e in lines)


def test_a_probe_logs_at_debug_and_is_counted_as_a_probe_not_a_job(
    start_server: StartServer,
) -> None:
    server = start_server("--jobs", "2", "--log-level", "debug")
    job = Request(1, ("gcc", "-c", "job.c", "-o", "job.o"), b"int job(void) { return 1; }\n")

    async def probe_then_job() -> None:
        for request in (probe_request("gcc"), job):
            reply = await compile_remote("127.0.0.1", server.port, request, timeout_s=60)
            assert reply.status == 0 and reply.obj

    asyncio.run(probe_then_job())

    wait_until(lambda: len(server.events("job_done")) == 2, 10, "both job_done lines")
    probe, real = server.events("job_done")
    assert (probe["input"], probe["level"], probe["probe"]) == ("distlb-probe.c", "debug", True)
    assert (real["input"], real["level"], real["probe"]) == ("job.c", "info", False)
    status = server.status()
    assert status["probes"]["ok"] == 1
    assert status["counters"]["ok"] == status["counters"]["accepted"] == 1
    metrics = server.http("/metrics")
    assert 'distlb_server_probes_total{outcome="ok"} 1.0' in metrics
    assert 'distlb_server_jobs_total{outcome="ok"} 1.0' in metrics
    assert "distlb_server_jobs_accepted_total 1.0" in metrics


def test_a_backend_that_never_comes_up_is_logged_down_with_its_reason_once(
    start_balancer: StartBalancer,
) -> None:
    name = f"127.0.0.1:{free_port()}"  # nothing listens there
    balancer = start_balancer("--backend", f"{name},kind=distccd", "--probe-interval", "0.05")
    wait_until(lambda: balancer.backend(name)["failures"] >= 20, 30, "twenty failed probes")
    balancer.stop()
    wait_until(lambda: balancer.event("balancer_stopped"), 10, "the balancer's last line read")

    states = [e for e in balancer.events("backend_state") if e["backend"] == name]
    assert len(states) == 1, states
    (down,) = states
    assert (down["state"], down["was"], down["level"]) == ("down", "unknown", "warning")
    assert down["reason"].startswith(f"probe: {name}: ") and "refused" in down["reason"]
