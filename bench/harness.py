"""What every benchmark here needs: processes started in their own sessions on
loopback, waited for with deadlines, stopped for sure; JSON from their admin pages
and logs; a distlb-balancer or HAProxy in front of servers."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from client.quantiles import quantile

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"  # all traffic stays on loopback
READY_TIMEOUT_S = 30.0
DISTLB_BALANCER = ROOT / ".venv" / "bin" / "distlb-balancer"
HAPROXY = Path("/usr/sbin/haproxy")


@dataclass
class Proc:
    """A process we started, where its output goes, and what it is called."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    stopped: bool = False


def free_ports(count: int) -> list[int]:
    socks = [socket.create_server((HOST, 0)) for _ in range(count)]
    ports = [sock.getsockname()[1] for sock in socks]
    for sock in socks:
        sock.close()
    return ports


def start(
    name: str, command: list[str], work: Path, procs: list[Proc], env: dict[str, str] | None = None
) -> Proc:
    """Start ``command`` in its own session, output to ``work/name.log``; it joins
    ``procs`` at once so that the caller's ``finally`` stops it whatever happens next."""
    log_path = work / f"{name}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            env=env,
        )
    proc = Proc(name, popen, log_path)
    procs.append(proc)
    return proc


def wait_ready(proc: Proc, port: int) -> None:
    """Return once ``port`` accepts connections; raise if the process dies or is slow."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(
                f"{proc.name} exited {proc.popen.returncode}:\n{proc.log_path.read_text()}"
            )
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(
        f"{proc.name}: port {port} not ready after {READY_TIMEOUT_S}s:\n{proc.log_path.read_text()}"
    )


def stop(proc: Proc) -> None:
    """SIGTERM, then SIGKILL to its whole session if it has not gone within 10 s. Once
    only: a later killpg could hit a new group that reused the number."""
    if proc.stopped:
        return
    proc.stopped = True
    if proc.popen.poll() is None:
        proc.popen.send_signal(signal.SIGTERM)
        try:
            proc.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.popen.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.popen.wait(timeout=10)


def stop_all(procs: list[Proc]) -> None:
    """SIGTERM to all first, so that they drain at the same time; then each as ``stop``."""
    for proc in procs:
        if not proc.stopped and proc.popen.poll() is None:
            proc.popen.send_signal(signal.SIGTERM)
    for proc in procs:
        stop(proc)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (its threads included)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def quantile_ms(seconds: Iterable[float], q: float, digits: int = 1) -> float:
    """The ``q`` quantile of durations in seconds, in milliseconds (NaN for none): the
    one definition every report here uses, the balancer's and the load generator's
    (client/quantiles.py)."""
    value = quantile(seconds, q)
    return math.nan if value is None else round(value * 1000, digits)


# A proxy from the environment must never see our requests: loopback only.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def wait_healthy(admin_port: int, count: int, timeout_s: float = 120.0) -> None:
    """Return once a balancer (its admin port) has ``count`` backends in rotation."""
    deadline = time.monotonic() + timeout_s
    while True:
        totals = get_json(admin_port, "/status")["totals"]
        assert isinstance(totals, dict)
        if totals["healthy_backends"] >= count:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {totals['healthy_backends']} of {count} backends healthy")
        time.sleep(0.1)


def get_json(port: int, path: str) -> dict[str, object]:
    with _OPENER.open(f"http://{HOST}:{port}{path}", timeout=2.0) as response:
        data = json.loads(response.read(1024 * 1024))
    if not isinstance(data, dict):
        raise RuntimeError(f"{HOST}:{port}{path} answered {data!r}")
    return data


def log_events(log_path: Path) -> list[dict[str, object]]:
    events = []
    for line in log_path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict):
                events.append(event)
    return events


def wait_event(proc: Proc, name: str, timeout_s: float = READY_TIMEOUT_S) -> dict[str, object]:
    """The first ``name`` line a JSON-logging process wrote, waiting up to ``timeout_s``;
    raises when it exits or the time is up."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = next((e for e in log_events(proc.log_path) if e.get("event") == name), None)
        if found is not None:
            return found
        if proc.popen.poll() is not None:
            raise RuntimeError(
                f"{proc.name} exited {proc.popen.returncode}:\n{proc.log_path.read_text()}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(f"{proc.name}: no {name} in {timeout_s}s")
        time.sleep(0.05)


class Backend(Protocol):
    """A distlb-server to put a balancer in front of: its distcc and status ports."""

    @property
    def port(self) -> int: ...
    @property
    def stats_port(self) -> int: ...


@dataclass(frozen=True)
class Balancer:
    proc: Proc
    port: int
    admin_port: int


def start_balancer(
    work: Path,
    servers: Sequence[Backend],
    procs: list[Proc],
    name: str,
    extra: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> Balancer:
    """distlb-balancer on port 0 (plus ``extra`` flags) in front of ``servers``; its ports
    come from its ``balancer_ready`` line. Returns once every backend is in rotation;
    raises when it exits or they are not all up within READY_TIMEOUT_S."""
    command = [str(DISTLB_BALANCER), "--listen", HOST, "--port", "0", "--admin-port", "0"]
    command += ["--log-format", "json", *extra]
    for server in servers:
        command += ["--backend", f"{HOST}:{server.port},status={server.stats_port}"]
    proc = start(name, command, work, procs, env)
    deadline = time.monotonic() + READY_TIMEOUT_S
    ready = wait_event(proc, "balancer_ready")
    # Listening once it says so; a connect-and-close here would only log a bad_request.
    balancer = Balancer(proc, int(str(ready["port"])), int(str(ready["admin_port"])))
    while True:
        totals = get_json(balancer.admin_port, "/status").get("totals")
        if isinstance(totals, dict) and totals.get("healthy_backends") == len(servers):
            return balancer
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name}: backends not all up after {READY_TIMEOUT_S}s: {totals}")
        time.sleep(0.05)


def start_haproxy(
    work: Path, procs: list[Proc], name: str, config: str, server_lines: list[str]
) -> int:
    """HAProxy from ``config``, a template of ``{host}``, ``{port}`` (a free port) and
    ``{servers}`` (the ``server_lines``), written to ``work/name.cfg``; raises when
    ``haproxy -c`` refuses it. Returns the port once it listens."""
    (port,) = free_ports(1)
    cfg = work / f"{name}.cfg"
    cfg.write_text(config.format(host=HOST, port=port, servers="\n".join(server_lines)))
    check = subprocess.run(
        [str(HAPROXY), "-c", "-f", str(cfg)], capture_output=True, timeout=30, check=False
    )
    if check.returncode != 0:
        output = (check.stdout + check.stderr).decode(errors="replace")
        raise RuntimeError(f"haproxy -c refused {cfg}:\n{output}")
    wait_ready(start(name, [str(HAPROXY), "-db", "-f", str(cfg)], work, procs), port)
    return port
