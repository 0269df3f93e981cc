"""A distcc farm in network namespaces: a client, a keepalived balancer pair, servers.

Real programs only: keepalived (configs/keepalived/keepalived.conf.template,
rendered per node), distlb-balancer and distlb-server, Debian's distcc client.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.distcc import CLIENT_TIMEOUT_S, distcc_env
from tests.support.netns import NETWORK, PREFIX_LEN, NsProcess, Topology
from tests.support.projects import local_object, sources
from tests.support.servers import role_command, wait_until

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "configs" / "keepalived" / "keepalived.conf.template"
HOSTS = {"cl": 10, "lba": 11, "lbb": 12, "s1": 21, "s2": 22, "s3": 23}
SERVERS = ("s1", "s2", "s3")
VIP = f"{NETWORK}.100"
DISTCC_PORT, STATS_PORT, ADMIN_PORT = 3632, 3633, 3634
RELAY_OFFSET = 1000  # a relayed server is reached on 4632 (distcc) and 4633 (status)
START_TIMEOUT_S = 60  # a Python process starting on a loaded 2-core machine
# What Debian's distcc 3.4 prints when it compiles a job locally after all.
LOCAL_MARKERS = ("running locally instead", "failed to distribute", "retrying locally")


def render_keepalived(*, node: str, priority: int, interface: str, vip: str) -> str:
    text = TEMPLATE.read_text()
    for name, value in {
        "ROUTER_ID": f"distlb_{node}",
        "ADMIN_PORT": str(ADMIN_PORT),
        "INTERFACE": interface,
        "VRID": "63",
        "PRIORITY": str(priority),
        "VIP": vip,
        "UNICAST": "",
    }.items():
        text = text.replace("{{" + name + "}}", value)
    assert "{{" not in text, "a placeholder of the template was not rendered"
    return text


_REFERENCE_OBJECTS: dict[tuple[str, bytes], bytes] = {}


def assert_objects_identical(project: Path) -> None:
    """Every object of ``project`` equals a local compile of its source, byte for byte.

    The projects of these tests are identical from test to test, so each reference
    object is compiled once per run (keyed by file name and content), two at a time.
    """
    todo = [s for s in sources(project) if (s.name, s.read_bytes()) not in _REFERENCE_OBJECTS]
    with ThreadPoolExecutor(2) as pool:
        for source, obj in zip(todo, pool.map(lambda s: local_object(project, s, "gcc"), todo),
                               strict=True):  # fmt: skip
            _REFERENCE_OBJECTS[(source.name, source.read_bytes())] = obj
    for source in sources(project):
        remote = (project / (source.stem + ".o")).read_bytes()
        expected = _REFERENCE_OBJECTS[(source.name, source.read_bytes())]
        assert remote == expected, f"{source.name}: the object differs from a local compile"


def count_local_fallbacks(stderr: str) -> int:
    return sum(1 for line in stderr.splitlines() if any(m in line for m in LOCAL_MARKERS))


def clients_with_errors(stderr: str, *, connect: bool) -> set[str]:
    """distcc client processes that logged an ERROR: refused/failed connects, or the rest
    (a reply cut off, a write that failed) when ``connect`` is False."""
    found = set()
    for line in stderr.splitlines():
        match = re.match(r"distcc\[(\d+)\] .*ERROR: (.*)", line)
        if match and ("connect to" in match.group(2)) == connect:
            found.add(match.group(1))
    return found


@dataclass
class NetFarm:
    topo: Topology
    run_dir: Path
    balancers: dict[str, NsProcess] = field(default_factory=dict)
    keepalived: dict[str, NsProcess] = field(default_factory=dict)
    servers: dict[str, NsProcess] = field(default_factory=dict)

    # -- servers -------------------------------------------------------------------
    def start_server(self, host: str, *, jobs: int = 2) -> NsProcess:
        tmp = self.run_dir / f"{host}-tmp"
        tmp.mkdir()
        tmp.chmod(0o1777)
        cmd = [
            *role_command("server"),
            "--listen", "0.0.0.0", "--port", str(DISTCC_PORT), "--stats-port", str(STATS_PORT),
            "--allow", f"{NETWORK}.0/{PREFIX_LEN}", "--allow", "127.0.0.0/8",
            "--jobs", str(jobs), "--tmp-dir", str(tmp), "--log-format", "json",
            "--shutdown-grace", "1", "--offer-by-load", "off",  # (one machine for all)
        ]  # fmt: skip
        proc = self.topo.start(host, f"server-{host}", cmd)
        self.servers[host] = proc
        return proc

    def wait_servers(self) -> None:
        for host, proc in self.servers.items():
            wait_until(
                lambda h=host, p=proc: (not p.alive())
                or self.topo.http(h, f"http://127.0.0.1:{STATS_PORT}/status") is not None,
                START_TIMEOUT_S, f"server in {host}", interval_s=0.2,
            )  # fmt: skip
            assert proc.alive(), f"server in {host} exited: {proc.text()[-2000:]}"

    def start_relay(self, host: str, *, delay_ms: float) -> NsProcess:
        """FaultRelayForTests in ``host``: addr:4632 -> 127.0.0.1:3632, 4633 -> 3633."""
        address = self.topo.addr(host)
        cmd = [os.fspath(Path(role_command("server")[0]).with_name("python")), "-m",
               "tests.support.fault_relay", "--delay-ms", str(delay_ms)]  # fmt: skip
        for port in (DISTCC_PORT, STATS_PORT):
            cmd += ["--listen", f"{address}:{port + RELAY_OFFSET}", "--to", f"127.0.0.1:{port}"]
        proc = self.topo.start(host, f"relay-{host}", cmd, cwd=ROOT)
        wait_until(lambda: "relay_ready" in proc.text() or not proc.alive(), START_TIMEOUT_S,
                   f"relay in {host}", interval_s=0.1)  # fmt: skip
        assert proc.alive(), proc.text()
        return proc

    def backend_spec(self, host: str, *, relayed: bool = False) -> str:
        offset = RELAY_OFFSET if relayed else 0
        return f"{self.topo.addr(host)}:{DISTCC_PORT + offset},status={STATS_PORT + offset}"

    # -- balancers and keepalived -------------------------------------------------
    def start_balancer(self, host: str, backends: list[str], *extra: str) -> NsProcess:
        cmd = [
            *role_command("balancer"),
            "--listen", "0.0.0.0", "--port", str(DISTCC_PORT), "--admin-port", str(ADMIN_PORT),
            "--allow", f"{NETWORK}.0/{PREFIX_LEN}", "--allow", "127.0.0.0/8",
            "--log-format", "json",
            # Patient on a loaded 2-core machine, quick to notice a dead backend.
            "--queue-timeout", "5", "--probe-interval", "0.5", "--probe-timeout", "3",
            "--connect-timeout", "1", "--fall", "2", "--rise", "2", "--shutdown-grace", "1",
            *extra,
        ]  # fmt: skip
        for spec in backends:
            cmd += ["--backend", spec]
        proc = self.topo.start(host, f"balancer-{host}", cmd)
        self.balancers[host] = proc
        return proc

    def status(self, host: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = self.topo.http_json(
            host, f"http://127.0.0.1:{ADMIN_PORT}/status"
        )
        return result

    def wait_healthy(self, host: str, count: int) -> None:
        proc = self.balancers[host]

        def healthy() -> bool:
            assert proc.alive(), f"balancer in {host} exited: {proc.text()[-2000:]}"
            status = self.status(host)
            return status is not None and status["totals"]["healthy_backends"] >= count

        wait_until(healthy, START_TIMEOUT_S, f"{count} healthy backends on {host}", 0.2)

    def start_keepalived(self, host: str, priority: int) -> NsProcess:
        node_dir = self.run_dir / f"keepalived-{host}"
        node_dir.mkdir()
        conf = node_dir / "keepalived.conf"
        conf.write_text(render_keepalived(node=host, priority=priority, interface="eth0",
                                          vip=f"{VIP}/{PREFIX_LEN}"))  # fmt: skip
        cmd = [
            "keepalived", "--use-file", str(conf), "--dont-fork", "--log-console",
            "--log-detail", "--vrrp", "--no-syslog",
            "--pid", str(node_dir / "keepalived.pid"),
            "--vrrp_pid", str(node_dir / "vrrp.pid"),
            "--checkers_pid", str(node_dir / "checkers.pid"),
        ]  # fmt: skip
        proc = self.topo.start(host, f"keepalived-{host}", cmd)
        self.keepalived[host] = proc
        return proc

    def vip_holder(self) -> list[str]:
        return [h for h in ("lba", "lbb") if self.topo.has_address(h, VIP)]

    # -- the client ---------------------------------------------------------------
    def client_env(self, *, backoff_s: int = 0, io_timeout_s: int = 10) -> dict[str, str]:
        """The real client's environment: the VIP only, fallback on, a short IO timeout."""
        env = distcc_env(
            f"{VIP}:{DISTCC_PORT}/16,lzo",
            fallback=True,
            extra={
                "DISTCC_BACKOFF_PERIOD": str(backoff_s),
                "DISTCC_IO_TIMEOUT": str(io_timeout_s),
            },
        )
        Path(env["DISTCC_DIR"]).chmod(0o755)
        return env

    def start_build(
        self, project: Path, *, jobs: int = 16, backoff_s: int = 0
    ) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["ip", "netns", "exec", self.topo.ns("cl"), "timeout", str(CLIENT_TIMEOUT_S),
             "make", f"-j{jobs}", "CC=distcc gcc"],
            cwd=project, env=self.client_env(backoff_s=backoff_s), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip

    def compile_one(self, project: Path, source: str) -> subprocess.CompletedProcess[str]:
        """One ``distcc gcc -c`` through the VIP, with a DISTCC_DIR of its own (no
        backoff remembered from an earlier build) and fallback on."""
        return subprocess.run(
            ["ip", "netns", "exec", self.topo.ns("cl"), "timeout", str(CLIENT_TIMEOUT_S),
             "distcc", "gcc", "-c", source, "-o", f"{source}.after.o"],
            cwd=project, env=self.client_env(), capture_output=True, text=True,
        )  # fmt: skip

    def finish_build(self, build: subprocess.Popen[str]) -> tuple[int, str, str, float]:
        start = time.monotonic()
        try:
            out, err = build.communicate(timeout=CLIENT_TIMEOUT_S + 10)
        except subprocess.TimeoutExpired:
            os.killpg(build.pid, 9)
            out, err = build.communicate()
        return build.returncode, out, err, time.monotonic() - start


def start_pair(farm: NetFarm, backends: list[str]) -> None:
    """Balancers in lba and lbb, keepalived in both; returns when lba holds the VIP."""
    for host in ("lba", "lbb"):
        farm.start_balancer(host, backends)
    for host in ("lba", "lbb"):
        farm.wait_healthy(host, len(backends))
    farm.start_keepalived("lba", priority=150)
    farm.start_keepalived("lbb", priority=100)
    wait_until(lambda: farm.vip_holder() == ["lba"], 30, "lba to hold the VIP", 0.1)
