"""Issue 19: what an operator's tools ask of the daemons. Every console script answers
``--version``; ``--check-config FILE`` says whether a config can work (0) or why not
(2); under systemd the daemons say READY=1, RELOADING=1 / READY=1, STOPPING=1 and
WATCHDOG=1 on the socket ``NOTIFY_SOCKET`` names (here a real one of the test's)."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import (
    StartBalancer,
    StartServer,
    role_command,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
CONSOLE_SCRIPTS = sorted(PYPROJECT["project"]["scripts"])
VERSION = PYPROJECT["project"]["version"]
RECEIVE_TIMEOUT_S = 60.0
# (the default shutdown-grace, 30 s, and 15 s past it: the unit's stop timeout follows)
STOPPING = ["STOPPING=1", "EXTEND_TIMEOUT_USEC=45000000"]


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("script", CONSOLE_SCRIPTS)
def test_every_console_script_prints_the_projects_version(script: str) -> None:
    result = _run([*role_command(script.removeprefix("distlb-")), "--version"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{script} {VERSION}"


@pytest.mark.parametrize(
    ("daemon", "config"),
    [("server", "configs/server.toml"), ("balancer", "configs/balancer.toml"),
     ("server", "configs/farm/server-1.toml"), ("balancer", "configs/farm/balancer.toml")],
)  # fmt: skip
def test_check_config_passes_the_shipped_configs(daemon: str, config: str) -> None:
    result = _run([*role_command(daemon), "--check-config", str(ROOT / config)])
    assert result.returncode == 0, result.stderr
    assert "the config is valid" in result.stdout


@pytest.mark.parametrize(
    ("daemon", "text", "message"),
    [
        ("server", 'jobs = "eight"\n', "jobs"),
        ("server", "job-lifetime = -1\n", "--job-lifetime must be positive"),
        ("server", "no-such-key = 1\n", "unknown key 'no-such-key'"),
        ("server", "port = [\n", "--config"),
        ("balancer", 'backend = ["10.0.0.1:3632,kind=nope"]\n', "--backend"),
        ("balancer", 'backend = ["127.0.0.1:9"]\nrise = 0\n', "--rise"),
        ("balancer", "allow = []\n", "at least one --backend"),
    ],
)
def test_check_config_refuses_a_bad_config_with_its_reason(
    tmp_path: Path, daemon: str, text: str, message: str
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    result = _run([*role_command(daemon), "--check-config", str(config)])
    assert result.returncode == 2
    assert message in result.stderr
    assert "valid" not in result.stdout


def test_check_config_does_not_start_the_daemon(tmp_path: Path) -> None:
    # Port 1 needs root to bind and is never free for a test: a daemon that went on
    # to start would fail there, or, as root, keep running past the timeout.
    config = tmp_path / "balancer.toml"
    config.write_text('port = 1\nadmin-port = 2\nbackend = ["127.0.0.1:9"]\n')
    result = _run([*role_command("balancer"), "--check-config", str(config)])
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_check_config_and_config_together_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text("jobs = 2\n")
    result = _run([*role_command("server"), "--config", str(config), "--check-config", str(config)])
    assert result.returncode == 2
    assert "give no --config" in result.stderr


class NotifySocket:
    """The socket systemd would listen on for a unit's notifications."""

    def __init__(self) -> None:
        # (a Unix socket's path must be short: not under pytest's deep tmp_path)
        self.dir = tempfile.mkdtemp(prefix="distlb-notify-")
        self.path = str(Path(self.dir) / "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(RECEIVE_TIMEOUT_S)

    def next(self) -> list[str]:
        """The next notification's lines (fails after RECEIVE_TIMEOUT_S without one)."""
        return self.sock.recv(4096).decode().split("\n")

    def next_other_than(self, *ignored: str) -> list[str]:
        """The next notification that is not just one of ``ignored`` (e.g. pings)."""
        while True:
            message = self.next()
            if message not in [[line] for line in ignored]:
                return message

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifySocket]:
    """NOTIFY_SOCKET set for the daemons this test starts (they inherit the environment)."""
    notify = NotifySocket()
    monkeypatch.setenv("NOTIFY_SOCKET", notify.path)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield notify
    notify.close()


def test_server_says_ready_pings_the_watchdog_and_says_stopping(
    notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch,
    start_server: StartServer,
) -> None:  # fmt: skip
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    server = start_server("--jobs", "1")
    ready = notify_socket.next()
    assert ready[0] == "READY=1"
    assert f"port {server.port}" in ready[1]
    assert notify_socket.next() == ["WATCHDOG=1"]
    assert notify_socket.next() == ["WATCHDOG=1"]  # (not once: for as long as it runs)
    server.proc.send_signal(signal.SIGTERM)
    assert notify_socket.next_other_than("WATCHDOG=1") == STOPPING
    assert server.proc.wait(30) == 0


def test_server_without_a_watchdog_sends_no_pings(
    notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch,
    start_server: StartServer,
) -> None:  # fmt: skip
    # A watchdog meant for another process (as a service's child sees it) is not ours.
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.setenv("WATCHDOG_PID", "1")
    server = start_server("--jobs", "1")
    assert notify_socket.next()[0] == "READY=1"
    server.proc.send_signal(signal.SIGTERM)
    assert notify_socket.next() == STOPPING
    assert server.proc.wait(30) == 0


def test_balancer_says_ready_reloading_ready_and_stopping(
    notify_socket: NotifySocket, start_balancer: StartBalancer
) -> None:
    balancer = start_balancer("--backend", "127.0.0.1:9")
    assert notify_socket.next()[0] == "READY=1"
    balancer.proc.send_signal(signal.SIGHUP)
    assert notify_socket.next() == ["RELOADING=1"]
    assert notify_socket.next() == [
        "READY=1",
        "STATUS=reloaded (changed: nothing); balancing 1 backends",
    ]
    assert balancer.logged("reloaded")["backends"] == ["127.0.0.1:9"]
    balancer.proc.send_signal(signal.SIGTERM)
    assert notify_socket.next() == STOPPING
    assert balancer.proc.wait(30) == 0


def test_a_balancer_with_workers_says_ready_once_for_all(
    notify_socket: NotifySocket, start_balancer: StartBalancer
) -> None:
    balancer = start_balancer("--backend", "127.0.0.1:9", "--workers", "2")
    assert notify_socket.next()[0] == "READY=1"
    balancer.proc.send_signal(signal.SIGHUP)  # (the supervisor forwards it to each worker)
    assert notify_socket.next() == ["RELOADING=1"]
    assert notify_socket.next() == [
        "READY=1",
        "STATUS=reloaded (changed: nothing); balancing 1 backends",
    ]
    balancer.proc.send_signal(signal.SIGTERM)
    assert notify_socket.next() == STOPPING
    assert balancer.proc.wait(30) == 0
    notify_socket.sock.settimeout(0)
    with pytest.raises(BlockingIOError):
        notify_socket.sock.recv(4096)  # (worker 1 said nothing)
