"""Network namespaces for system tests: a bridge, veths, processes, faults, cleanup.

Every name this module makes starts with ``dlb<pid>-`` (namespaces) so that a run
can find and remove what an earlier, killed run left behind (:func:`sweep_leftovers`).
The bridge lives in its own namespace and each veth is created directly between two
namespaces, so nothing touches the root namespace: deleting the namespaces deletes
every veth and the bridge with them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tests.support.servers import wait_until

NAME_PREFIX = "dlb"
NETWORK = "198.18.0"  # a /24 of 198.18.0.0/15, set aside for benchmarks and tests
PREFIX_LEN = 24
_OWNED = re.compile(rf"^{NAME_PREFIX}(\d+)-")


def run_prefix() -> str:
    return f"{NAME_PREFIX}{os.getpid()}-"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, which no one may ever reap here, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            raw = stat.read()
    except OSError:
        return False
    return raw[raw.rindex(")") + 2 :].split()[0] not in ("Z", "X")


def _kill_namespace_processes(ns: str) -> None:
    found = ip("netns", "pids", ns, check=False).stdout.split()
    for pid in found:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            continue


def _delete_namespace(ns: str) -> None:
    _kill_namespace_processes(ns)
    ip("netns", "del", ns, check=False)


def sweep_leftovers() -> list[str]:
    """Remove namespaces (and so their processes' network) of dead earlier runs."""
    removed = []
    for line in ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        owned = _OWNED.match(name)
        if owned and (int(owned.group(1)) == os.getpid() or not pid_alive(int(owned.group(1)))):
            _delete_namespace(name)
            removed.append(name)
    return removed


def namespaces_unavailable() -> str | None:
    """Why namespaces cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "system tests need root to create network namespaces"
    probe = f"{run_prefix()}probe"
    result = ip("netns", "add", probe, check=False)
    if result.returncode != 0:
        return f"`ip netns add` failed: {result.stderr.strip()}"
    ip("netns", "del", probe, check=False)
    return None


@dataclass
class NsProcess:
    """A process started in a namespace, in its own session, logging to a file."""

    name: str
    ns: str
    proc: subprocess.Popen[str]
    log_path: Path
    log: TextIO

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") == name:
                found.append(event)
        return found

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive():
            self.proc.send_signal(signum)

    def stop(self, timeout_s: float = 5.0) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(5)
        self.log.close()


@dataclass
class Topology:
    """Namespaces on one bridge: each named host gets ``eth0`` with ``198.18.0.<n>``."""

    run_dir: Path
    hosts: dict[str, int]  # short name -> last octet
    prefix: str = field(default_factory=run_prefix)
    processes: list[NsProcess] = field(default_factory=list)
    made: list[str] = field(default_factory=list)

    @property
    def bridge_ns(self) -> str:
        return f"{self.prefix}br"

    def ns(self, host: str) -> str:
        return f"{self.prefix}{host}"

    def addr(self, host: str) -> str:
        return f"{NETWORK}.{self.hosts[host]}"

    def port_name(self, host: str) -> str:
        """The bridge's end of ``host``'s veth (in the bridge namespace)."""
        return f"p-{host}"[:15]

    def create(self) -> None:
        ip("netns", "add", self.bridge_ns)
        self.made.append(self.bridge_ns)
        br = self.bridge_ns
        ip("-n", br, "link", "add", "br0", "type", "bridge")
        ip("-n", br, "link", "set", "br0", "up")
        ip("-n", br, "link", "set", "lo", "up")
        for host, octet in self.hosts.items():
            ns = self.ns(host)
            ip("netns", "add", ns)
            self.made.append(ns)
            port = self.port_name(host)
            ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port,
               "netns", br)  # fmt: skip
            ip("-n", br, "link", "set", port, "master", "br0")
            ip("-n", br, "link", "set", port, "up")
            ip("-n", ns, "addr", "add", f"{NETWORK}.{octet}/{PREFIX_LEN}", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            ip("-n", ns, "link", "set", "lo", "up")

    def exec(
        self, host: str, cmd: Sequence[str], *, check: bool = True, timeout_s: float = 30
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.ns(host), *cmd],
            capture_output=True, text=True, check=check, timeout=timeout_s,
        )  # fmt: skip

    def exec_bridge(self, cmd: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.bridge_ns, *cmd],
            capture_output=True, text=True, check=True, timeout=30,
        )  # fmt: skip

    def start(
        self,
        host: str,
        name: str,
        cmd: Sequence[str],
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> NsProcess:
        log_path = self.run_dir / f"{name}.log"
        log = log_path.open("w")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(host), *cmd],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
            cwd=cwd, env=env, start_new_session=True,
        )  # fmt: skip
        started = NsProcess(name=name, ns=self.ns(host), proc=proc, log_path=log_path, log=log)
        self.processes.append(started)
        return started

    def http(self, host: str, url: str, timeout_s: float = 5) -> str | None:
        """GET ``url`` from inside ``host``'s namespace; None when it fails."""
        result = self.exec(host, ["curl", "-fsS", "--max-time", str(timeout_s), url],
                           check=False, timeout_s=timeout_s + 5)  # fmt: skip
        return result.stdout if result.returncode == 0 else None

    def http_json(self, host: str, url: str) -> Any:
        text = self.http(host, url)
        return json.loads(text) if text else None

    def has_address(self, host: str, address: str) -> bool:
        out = ip("-n", self.ns(host), "-o", "-4", "addr", "show", "dev", "eth0", check=False)
        return f" {address}/" in out.stdout

    def wait_address(self, host: str, address: str, timeout_s: float) -> float:
        """Seconds until ``host`` holds ``address``; AssertionError after ``timeout_s``."""
        start = time.monotonic()
        wait_until(lambda: self.has_address(host, address), timeout_s,
                   f"{address} on {host}", interval_s=0.01)  # fmt: skip
        return time.monotonic() - start

    def iptables(self, host: str, *rule: str) -> None:
        self.exec(host, ["iptables", "-w", *rule])

    def cut_link(self, host: str) -> None:
        """Take ``host``'s bridge port down: its cable is pulled."""
        ip("-n", self.bridge_ns, "link", "set", self.port_name(host), "down")

    def destroy(self) -> None:
        errors = []
        for proc in reversed(self.processes):
            try:
                proc.stop()
            except (OSError, subprocess.SubprocessError) as exc:
                errors.append(f"{proc.name}: {exc}")
        for ns in reversed(self.made):
            _delete_namespace(ns)
        self.made.clear()
        left = [n for n in ip("netns", "list", check=False).stdout.split() if
                n.startswith(self.prefix)]  # fmt: skip
        if errors or left:
            raise AssertionError(f"cleanup left {left}, errors {errors}")
