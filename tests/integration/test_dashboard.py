"""The balancer's dashboard in real headless Chromium, watched while a real build runs
through the balancer (the real distcc client and make; the compiles are gcc behind
gate-cc, which holds each job until the test has seen it running, then compiles for
real). The page is never reloaded: what it shows comes from its live stream."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.chromium import LivePage
from tests.support.distcc import distcc_env
from tests.support.projects import write_c_project
from tests.support.servers import (
    BalancerProcess,
    ServerProcess,
    StartBalancer,
    StartServer,
    wait_until,
)

DOCS = Path(__file__).resolve().parents[2] / "docs"
MODULES = 8
COMPILES = MODULES + 1  # (and main.c)

pytestmark = pytest.mark.integration


def _spec(server: ServerProcess) -> str:
    return f"127.0.0.1:{server.port},status={server.stats_port}"


@pytest.fixture
def gate(fake_compilers: tuple[Path, Path]) -> Iterator[Path]:
    """The stand-ins' bin dir; the gate is opened at the end whatever happened, so no
    job is left waiting."""
    bin_dir, _ = fake_compilers
    yield bin_dir
    (bin_dir / "gate-cc.open").touch()


def _gated_farm(
    start_server: StartServer, start_balancer: StartBalancer, bin_dir: Path,
    *extra: str, sandbox: str = "bwrap",
) -> tuple[list[ServerProcess], BalancerProcess]:  # fmt: skip
    servers = [
        start_server(
            "--jobs",
            "2",
            "--sandbox",
            sandbox,
            "--compiler",
            "gate-cc",
            "--compiler",
            "gcc",
            path_prepend=str(bin_dir),
        )
        for _ in range(2)
    ]
    args = [a for s in servers for a in ("--backend", _spec(s))]
    balancer = start_balancer(*args, "--allow-compiler", "gate-cc", *extra)
    balancer.wait_healthy(2)
    return servers, balancer


def _build(
    balancer: BalancerProcess, project: Path, bin_dir: Path, fallback: bool
) -> subprocess.Popen[str]:
    env = distcc_env(f"127.0.0.1:{balancer.port}/8", fallback=fallback)
    env["PATH"] = f"{bin_dir}:{env['PATH']}"  # (distcc runs gate-cc -E here: plain gcc)
    return subprocess.Popen(
        ["timeout", "180", "make", "-j8", "CC=distcc gate-cc"], cwd=project, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _finish(make: subprocess.Popen[str], project: Path) -> None:
    _, stderr = make.communicate(timeout=200)
    assert make.returncode == 0, stderr
    run = subprocess.run(
        [project / "prog"], capture_output=True, text=True, timeout=30, check=False
    )
    assert run.returncode == 0 and run.stdout.strip(), run.stderr


def _json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return dict(json.load(reply))


RUNNING = """Array.from(document.querySelectorAll('#timeline .job'))
  .filter(j => j.dataset.backend.startsWith('127.0.0.1:'))
  .map(j => [j.dataset.file, j.dataset.client, j.dataset.backend])"""


def test_a_running_build_shows_live_on_the_page_and_stays_in_its_history(
    start_server: StartServer, start_balancer: StartBalancer, gate: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    servers, balancer = _gated_farm(start_server, start_balancer, gate)
    origin = f"http://127.0.0.1:{balancer.stats_port}"
    project = write_c_project(tmp_path / "proj", modules=MODULES)
    page = LivePage(origin + "/")
    make = None
    try:
        page.wait_for("document.getElementById('mode').textContent === 'live'", 30, "live mode")
        page.evaluate("window.sameDocument = true")
        points = page.evaluate("Number(document.getElementById('chart-jobs').dataset.points)")
        make = _build(balancer, project, gate, fallback=False)

        # The build's jobs, held at the gate, in the timeline: every slot busy.
        shown = page.wait_for(f"(r => r.length >= 4 && r)({RUNNING})", 60, "4 jobs running")
        assert {backend for _, _, backend in shown} == {f"127.0.0.1:{s.port}" for s in servers}
        assert all(re.fullmatch(r"mod\d+\.c|main\.c", file) for file, _, _ in shown), shown
        assert all(client == "127.0.0.1" for _, client, _ in shown)
        who = "document.querySelector('#clients tr[data-client=\"127.0.0.1\"]')"
        page.wait_for(f"{who} && Number({who}.cells[5].textContent) >= 4", 10, "the client")
        # ... and its share of the farm: every running slot is its.
        share = "document.querySelector('#shares tr[data-share=\"127.0.0.1\"]')"
        page.wait_for(f"{share} && {share}.cells[2].textContent.endsWith('(100 %)')", 10,
                      "the client's share")  # fmt: skip
        # ... and the slots chart with every slot in use (a sample is taken every 2 s).
        used = "Math.max(0, ...farm.rows.slots_used.map(v => v || 0))"
        page.wait_for(f"{used} === 4", 15, "4 slots in use on the chart")

        (gate / "gate-cc.open").touch()
        _finish(make, project)

        # After it: the timeline empties, the jobs/s chart has grown by the build.
        page.wait_for("document.querySelectorAll('#timeline .job').length === 0", 30, "no jobs")
        sample_s = float(page.evaluate("farm.sample_s"))
        total = (
            f"Math.round(Number(document.getElementById('chart-jobs').dataset.total) * {sample_s})"
        )
        assert (
            page.wait_for(f"{total} >= {COMPILES} && {total}", 30, "the build's jobs") == COMPILES
        )
        assert (
            page.evaluate("Number(document.getElementById('chart-jobs').dataset.points)") > points
        )
        page.wait_for(f"Number({who}.cells[1].textContent) === {COMPILES}", 10, "its jobs counted")
        # A backend's own charts: click its row.
        first = f"127.0.0.1:{servers[0].port}"
        page.evaluate(f"document.querySelector('#backends tr[data-backend=\"{first}\"]').click()")
        page.wait_for(f"document.getElementById('charts').dataset.scope === '{first}'", 10,
                      "the backend's charts")  # fmt: skip
        # (its row comes every 10 s, and the page asks again every 5 s)
        answered = int(balancer.backend(first)["ok"])
        sent = f"Number(document.getElementById('chart-jobs').dataset.total) * {sample_s * 5}"
        page.wait_for(f"Math.round({sent}) === {answered}", 30, "the backend's jobs on its chart")
        assert 0 < answered < COMPILES
        assert page.evaluate("window.sameDocument") is True, "the page was reloaded"

        # Nothing reached beyond the balancer, and the page names no other place.
        assert page.requests and all(url.startswith(origin + "/") for url in page.requests)
        with urllib.request.urlopen(origin + "/", timeout=10) as reply:
            html = reply.read().decode()
        assert "://" not in html
        for link in re.findall(r"""\b(?:src|href|action)\s*=\s*["']([^"']*)""", html):
            assert ":" not in link and not link.startswith("//"), link
    finally:
        (gate / "gate-cc.open").touch()
        if make is not None and make.poll() is None:
            make.communicate(timeout=200)
        page.close()

    # The history still holds the build, and per client who sent it.
    history = _json(origin + "/history.json")
    rows = history["rows"]
    assert isinstance(rows, dict)
    assert sum(v or 0 for v in rows["ok"]) == COMPILES
    assert max(v or 0 for v in rows["slots_used"]) == 4
    activity = _json(origin + "/dashboard.json")["activity"]
    assert isinstance(activity, dict)
    assert [(c["client"], c["jobs"]) for c in activity["clients"]] == [("127.0.0.1", COMPILES)]
    for server in servers:
        per = _json(f"{origin}/history.json?backend=127.0.0.1:{server.port}")["rows"]
        assert isinstance(per, dict) and per["t"], "no history for a backend"


def test_a_backend_killed_during_a_build_shows_as_down_without_a_reload(
    start_server: StartServer, start_balancer: StartBalancer, gate: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    # (no sandbox: a SIGKILLed server's sandboxes, run as job uids, would outlive the test)
    servers, balancer = _gated_farm(start_server, start_balancer, gate, sandbox="none")
    victim = servers[0]
    name = f"127.0.0.1:{victim.port}"
    project = write_c_project(tmp_path / "proj", modules=MODULES)
    page = LivePage(f"http://127.0.0.1:{balancer.stats_port}/")
    make = None
    try:
        page.wait_for("document.getElementById('mode').textContent === 'live'", 30, "live mode")
        page.evaluate("window.sameDocument = true")
        make = _build(balancer, project, gate, fallback=True)
        page.wait_for(f"{RUNNING}.some(j => j[2] === '{name}')", 60, "a job on the victim")

        os.kill(victim.proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        row = f"document.querySelector('#backends tr[data-backend=\"{name}\"]')"
        page.wait_for(f"{row} && {row}.dataset.state === 'down'", 15, "the backend down")
        change = f'#changes tr[data-backend="{name}"][data-state="down"]'
        page.wait_for(f"!!document.querySelector('{change}')", 15, "the change in the timeline")
        print(f"shown down {time.monotonic() - killed:.2f} s after SIGKILL")
        reason = page.evaluate(f"document.querySelector('{change}').cells[3].textContent")
        assert reason and reason != "probes ok"
        assert page.evaluate("window.sameDocument") is True, "the page was reloaded"

        (gate / "gate-cc.open").touch()
        _finish(make, project)
    finally:
        (gate / "gate-cc.open").touch()
        if make is not None and make.poll() is None:
            make.communicate(timeout=200)
        page.close()


def test_viewers_over_the_bound_are_refused_and_the_page_polls_instead(
    start_server: StartServer, start_balancer: StartBalancer
) -> None:
    server = start_server("--jobs", "1")
    balancer = start_balancer("--backend", _spec(server), "--dashboard-viewers", "1")
    balancer.wait_healthy(1)
    origin = f"http://127.0.0.1:{balancer.stats_port}"
    held = urllib.request.urlopen(origin + "/events", timeout=10)  # the one live viewer
    try:
        assert held.headers["Content-Type"] == "text/event-stream"
        assert held.readline().startswith(b"retry:")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(origin + "/events", timeout=10)
        assert refused.value.code == 503
        page = LivePage(origin + "/")
        try:
            page.wait_for("document.getElementById('mode').textContent === 'polling'", 30,
                          "polling mode")  # fmt: skip
            row = f'#backends tr[data-backend="127.0.0.1:{server.port}"][data-state="up"]'
            page.wait_for(f"!!document.querySelector('{row}')", 15, "the backend")
        finally:
            page.close()
    finally:
        held.close()


def test_the_server_dashboard_shows_its_running_job_and_history(
    start_server: StartServer, gate: Path, tmp_path: Path
) -> None:
    server = start_server("--jobs", "2", "--compiler", "gate-cc", "--compiler", "gcc",
                          path_prepend=str(gate))  # fmt: skip
    origin = f"http://127.0.0.1:{server.stats_port}"
    (tmp_path / "one.c").write_text("int one(void) { return 1; }\n")
    env = distcc_env(f"127.0.0.1:{server.port}/2", fallback=False)
    env["PATH"] = f"{gate}:{env['PATH']}"
    distcc = subprocess.Popen(
        ["timeout", "120", "distcc", "gate-cc", "-c", "one.c", "-o", "one.o"], cwd=tmp_path,
        env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    page = LivePage(origin + "/dashboard")
    try:
        job = "document.querySelector('#running tr[data-file=\"one.c\"]')"
        page.wait_for(f"!!{job}", 30, "the running job")
        assert page.evaluate("document.getElementById('slots').textContent") == "1 / 2"
        assert page.evaluate("document.getElementById('sandbox').textContent") == "bwrap"
        (gate / "gate-cc.open").touch()
        _, stderr = distcc.communicate(timeout=120)
        assert distcc.returncode == 0, stderr
        page.wait_for(f"!{job}", 15, "the job gone")
        total = "Number(document.getElementById('chart-jobs').dataset.total)"
        page.wait_for(f"{total} > 0", 30, "the job in the history")
        page.screenshot(tmp_path / "server-dashboard.png", height=700)
        assert all(url.startswith(origin + "/") for url in page.requests)
    finally:
        (gate / "gate-cc.open").touch()
        if distcc.poll() is None:
            distcc.communicate(timeout=120)
        page.close()
    with urllib.request.urlopen(origin + "/", timeout=10) as reply:  # (still distccd's text)
        assert reply.read().decode().startswith("argv /distccd\n<distccstats>\n")
    assert "://" not in urllib.request.urlopen(origin + "/dashboard", timeout=10).read().decode()
    if os.environ.get("DISTLB_UPDATE_DOCS") == "1":
        shutil.copy(tmp_path / "server-dashboard.png", DOCS / "server-dashboard.png")


def test_the_admin_port_answers_only_admin_allow_but_healthz_to_anyone(
    start_server: StartServer, start_balancer: StartBalancer
) -> None:
    server = start_server("--jobs", "1")
    balancer = start_balancer("--backend", _spec(server), "--admin-allow", "198.18.0.0/15")
    origin = f"http://127.0.0.1:{balancer.stats_port}"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(origin + "/healthz", timeout=5) as reply:
                return bool(reply.status == 200)
        except urllib.error.HTTPError:
            return False

    wait_until(healthy, 30, "keepalived's check to pass from loopback")
    for path in ("/", "/status", "/metrics", "/events", "/dashboard.json", "/history.json"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(origin + path, timeout=10)
        assert refused.value.code == 403, path
    assert balancer.logged("status_refused")["client"] == "127.0.0.1"
