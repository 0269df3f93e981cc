"""Issue 4 acceptance: distlb-probe and distlb-monitor against a real DNS server and five
machines (healthy distlb-server, real distccd, a hung server, nothing, a silent listener)."""

from __future__ import annotations

import email
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.distcc import run_make
from tests.support.projects import write_c_project
from tests.support.servers import (
    ServerProcess,
    free_port,
    free_port_pair,
    role_command,
    wait_until,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DOMAIN = "farm.test"
ADDRESSES = ["127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14", "127.0.0.15"]
HEALTHY = {"127.0.0.11", "127.0.0.12"}
BAD_NAMES = {"distcc3.farm.test", "distcc4.farm.test", "distcc5.farm.test"}


@dataclass
class Farm:
    port: int
    dns: str


def _silent_listener(address: str, port: int, stop: threading.Event) -> socket.socket:
    """Accepts connections and never answers (what a wedged server looks like)."""
    sock = socket.create_server((address, port))
    sock.settimeout(0.2)
    held: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                break
        for conn in held:
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return sock


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    assert shutil.which("dnsmasq"), "Debian's dnsmasq is needed (scripts/bootstrap.sh installs it)"
    port = free_port_pair()
    dns_port = free_port()
    records = [f"--host-record=distcc{i}.{DOMAIN},{a}" for i, a in enumerate(ADDRESSES, 1)]
    records += [f"--srv-host=_distcc._tcp.{DOMAIN},distcc{i}.{DOMAIN},{port},0,10"
                for i in range(1, len(ADDRESSES) + 1)]  # fmt: skip
    dnsmasq = subprocess.Popen(
        ["dnsmasq", "--keep-in-foreground", f"--port={dns_port}", "--listen-address=127.0.0.1",
         "--bind-interfaces", "--no-resolv", "--no-hosts", "--conf-file=/dev/null", "--pid-file=",
         f"--local=/{DOMAIN}/", "--log-facility=/dev/null", *records],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    tmp = tmp_path_factory.mktemp("farm")
    server_tmp = Path(os.path.join("/tmp", f"distlb-tools-{port}"))
    server_tmp.mkdir(mode=0o1777, exist_ok=True)
    server_tmp.chmod(0o1777)
    stop = threading.Event()
    started: list[ServerProcess] = []
    daemon = None
    listener = None
    try:
        for address in (ADDRESSES[0], ADDRESSES[2]):
            proc = ServerProcess.start(["--listen", address, "--port", str(port),
                                        "--stats-port", str(port + 1), "--jobs", "2"],
                                       tmp_dir=server_tmp)  # fmt: skip
            started.append(proc)
        daemon = subprocess.Popen(
            ["distccd", "--daemon", "--no-detach", "--listen", ADDRESSES[1], "--port", str(port),
             "--allow", "127.0.0.0/8", "--jobs", "2", "--stats", "--stats-port", str(port + 1),
             "--log-stderr", "--log-level", "error",
             *(["--user", "distccd"] if os.geteuid() == 0 else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        listener = _silent_listener(ADDRESSES[4], port, stop)
        wait_until(lambda: _connects(ADDRESSES[1], port), 30, "distccd")
        started[1].proc.send_signal(signal.SIGSTOP)  # 127.0.0.13: hung
        yield Farm(port=port, dns=f"127.0.0.1:{dns_port}")
    finally:
        stop.set()
        if listener is not None:
            listener.close()
        for proc in started:
            if proc.proc.poll() is None:
                proc.proc.send_signal(signal.SIGCONT)
            proc.stop()
        for p in (daemon, dnsmasq):
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(10)
        shutil.rmtree(server_tmp, ignore_errors=True)
        del tmp


def _connects(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def _tool(
    name: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*role_command(name), *args], capture_output=True, text=True,
                          timeout=60, check=False, env=env)  # fmt: skip


@pytest.mark.parametrize("source", ["pattern", "srv"])
def test_probe_lists_exactly_the_healthy_servers_within_the_deadline(
    farm: Farm, source: str
) -> None:
    where = (["--pattern", f"distcc%d.{DOMAIN}", "--port", str(farm.port)] if source == "pattern"
             else ["--srv", DOMAIN])  # fmt: skip
    result = _tool("probe", *where, "--dns-server", farm.dns, "--deadline", "1",
                   "--format", "json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert len(report["servers"]) == 5
    assert {s["host"] for s in report["servers"] if s["ok"]} == HEALTHY
    # All probed at once: the whole run is the deadline plus a small margin.
    assert report["elapsed_s"] <= 1.0 + 0.5, report["elapsed_s"]
    assert sorted(report["qualified"]) == [f"{a}:{farm.port}/2" for a in sorted(HEALTHY)]


def test_probe_output_drives_a_real_distcc_build(farm: Farm, tmp_path: Path) -> None:
    result = _tool("probe", "--srv", DOMAIN, "--dns-server", farm.dns, "--options", "lzo")
    assert result.returncode == 0, result.stderr
    hosts = result.stdout.strip()
    assert sorted(hosts.split()) == sorted(f"{a}:{farm.port}/2,lzo" for a in HEALTHY)
    project = write_c_project(tmp_path / "proj", modules=6)
    build = run_make(project, hosts=hosts, jobs=4)
    assert build.returncode == 0, build.stderr


def test_probe_exits_1_when_no_server_qualifies(farm: Farm) -> None:
    result = _tool("probe", f"{ADDRESSES[3]}:{farm.port}", f"{ADDRESSES[4]}:{farm.port}",
                   "--deadline", "0.5")  # fmt: skip
    assert result.returncode == 1
    assert result.stdout.strip() == ""
    assert "left out" in result.stderr


def test_monitor_flags_the_three_bad_machines_and_exits_nonzero(farm: Farm, tmp_path: Path) -> None:
    textfile = tmp_path / "distlb.prom"
    result = _tool("monitor", "--srv", DOMAIN, "--dns-server", farm.dns, "--probes", "2",
                   "--timeout", "1", "--format", "json", "--textfile", str(textfile))  # fmt: skip
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    states = {m["host"]: m["state"] for m in report["machines"]}
    assert {h for h, s in states.items() if s == "ok"} == HEALTHY
    assert {h for h, s in states.items() if s != "ok"} == set(ADDRESSES) - HEALTHY
    for name in BAD_NAMES:
        assert name in report["alert"]
    prom = textfile.read_text()
    assert f'distlb_monitor_up{{machine="distcc1.{DOMAIN}:{farm.port}"}} 1' in prom
    assert f'distlb_monitor_up{{machine="distcc4.{DOMAIN}:{farm.port}"}} 0' in prom


def test_monitor_marks_machines_over_the_latency_threshold_slow(farm: Farm) -> None:
    result = _tool("monitor", f"{ADDRESSES[0]}:{farm.port}", "--probes", "2", "--slow-ms", "0.001")
    assert result.returncode == 1
    assert "SLOW" in result.stdout and result.stdout.splitlines()[-1].startswith("ALERT: 1 of 1")


def test_cron_script_mails_an_alert_naming_the_bad_machines(farm: Farm) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import Envelope

    received: list[str] = []

    class Collect:
        async def handle_DATA(self, server: object, session: object, envelope: Envelope) -> str:
            assert isinstance(envelope.content, bytes), envelope.content
            received.append(envelope.content.decode("utf-8", "replace"))
            return "250 OK"

    smtp_port = free_port()
    controller = Controller(Collect(), hostname="127.0.0.1", port=smtp_port)
    controller.start()
    try:
        env = dict(os.environ)
        env.update({
            "DISTLB_MONITOR": " ".join(role_command("monitor")),
            "MONITOR_ARGS": f"--srv {DOMAIN} --dns-server {farm.dns} --probes 1 --timeout 1",
            "ALERT_TO": "farm-admins@example.test", "ALERT_FROM": "monitor@example.test",
            "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(smtp_port), "PYTHON": sys.executable,
        })  # fmt: skip
        script = ROOT / "configs" / "cron" / "monitor-alert.sh"
        result = subprocess.run(["sh", str(script)], capture_output=True, text=True, env=env,
                                timeout=120, check=False)  # fmt: skip
        assert result.returncode == 1, result.stderr
        wait_until(lambda: received, 10, "the alert mail")
    finally:
        controller.stop()
    mail = email.message_from_string(received[0])
    subject = " ".join(str(mail["Subject"]).split())  # long subjects arrive folded
    assert subject.startswith("[distlb] ALERT: 3 of 5 machines bad")
    for name in BAD_NAMES:
        assert name in subject
    assert "distcc1.farm.test" in mail.get_payload()  # the whole table is in the body
