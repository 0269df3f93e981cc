"""Start real distlb-server processes on loopback port 0 and read what they log."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

READY_TIMEOUT_S = 30.0
STAND_INS = ("hang-cc", "slow-cc", "whoami-cc", "evil-cc")


def _job_uids_of_this_worker() -> tuple[int, int]:
    """The per-job uids the servers of this test process use. With pytest-xdist each
    worker has its own thousand (past the default range, which the system tests' farm
    keeps), so a test that looks for processes left by its jobs sees only its own."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    index = int(worker[2:]) + 1 if worker.startswith("gw") and worker[2:].isdigit() else 0
    first = 900_000_000 + 1000 * index
    return first, first + 999


JOB_UIDS = _job_uids_of_this_worker()


def role_command(role: str) -> list[str]:
    """How to run ``distlb-<role>``: the venv's console script, else ``python -m``."""
    script = Path(sys.executable).with_name(f"distlb-{role}")
    return [str(script)] if script.exists() else [sys.executable, "-m", f"{role}.main"]


def server_command() -> list[str]:
    return role_command("server")


def wait_until(predicate: Any, timeout_s: float, what: str, interval_s: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


UNPRIVILEGED = "nobody"

_AS_ANOTHER_USER = """set -e
uid=$1
gid=$2
hidden=$3
shift 3
stage=$(mktemp -d /tmp/distlb-unpriv-XXXXXX)
i=0
for path in $NEEDED; do
    mkdir "$stage/$i"; mount --bind "$path" "$stage/$i"; i=$((i+1))
done
mount -t tmpfs -o mode=0755 distlb-unprivileged "$hidden"
i=0
for path in $NEEDED; do
    mkdir -p "$path"; mount --bind "$stage/$i" "$path"; umount "$stage/$i"; rmdir "$stage/$i"
    i=$((i+1))
done
rmdir "$stage"
exec setpriv --reuid="$uid" --regid="$gid" --clear-groups --inh-caps=-all -- "$@"
"""


def as_unprivileged_user(name: str = UNPRIVILEGED) -> list[str]:
    """A prefix that runs a command as the unprivileged user ``name``, for tests of a
    server that is not root. This machine's Python (and maybe the checkout) lives
    under a directory only root may enter (/root): in a mount namespace of the
    command's own, that directory is covered by an empty one that anyone may enter,
    with just the Python install, the venv and the checkout bound back in place.
    Needs root (the test is root; the server it starts is not)."""
    import pwd

    if os.geteuid() != 0:
        raise AssertionError("starting a process as another user needs the tests to run as root")
    entry = pwd.getpwnam(name)
    checkout = Path(__file__).resolve().parents[2]
    needed = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix), str(checkout)}
    hidden = sorted({closed for path in needed if (closed := _first_closed_ancestor(path))})
    if len(hidden) > 1:
        raise AssertionError(f"Python and the checkout are behind several closed dirs: {hidden}")
    if not hidden:
        return ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}",
                "--clear-groups", "--inh-caps=-all", "--"]  # fmt: skip
    under = [path for path in sorted(needed) if path.startswith(str(hidden[0]) + os.sep)]
    if any(" " in path for path in under):
        raise AssertionError(f"a path with a space cannot be bound back: {under}")
    return [
        "env", "NEEDED=" + " ".join(under), "unshare", "--mount", "--propagation", "private",
        "sh", "-c", _AS_ANOTHER_USER, "sh", str(entry.pw_uid), str(entry.pw_gid), str(hidden[0]),
    ]  # fmt: skip


def _first_closed_ancestor(path: str) -> str | None:
    """The first directory on the way to ``path`` that others may not enter."""
    current = "/"
    for part in Path(path).parts[1:]:
        current = os.path.join(current, part)
        if os.path.isdir(current) and not os.stat(current).st_mode & 0o001:
            return current
    return None


def _spawn(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env
    )


@dataclass
class ServerProcess:
    proc: subprocess.Popen[str]
    tmp_dir: Path
    port: int = 0
    stats_port: int = 0
    agent_port: int | None = None
    lines: list[str] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        args: list[str],
        *,
        tmp_dir: Path,
        path_prepend: str | None = None,
        prefix: list[str] | None = None,
    ) -> ServerProcess:
        """Start a server; ``prefix`` runs it through another command (e.g.
        :func:`as_unprivileged_user`), which must exec it in its own process."""
        env = dict(os.environ)
        if path_prepend:
            env["PATH"] = path_prepend + os.pathsep + env.get("PATH", "")
        cmd = [
            *(prefix or []),
            *server_command(),
            "--listen", "127.0.0.1",
            "--port", "0",
            "--stats-port", "0",
            "--log-format", "json",
            "--tmp-dir", str(tmp_dir),
            *(() if any(a.startswith("--job-uids") for a in args) else
              ("--job-uids", f"{JOB_UIDS[0]}-{JOB_UIDS[1]}")),
            # Tests share two cores: the machine's load is the other tests' (a test of
            # --offer-by-load turns it on).
            *(() if any(a.startswith("--offer-by-load") for a in args) else
              ("--offer-by-load", "off")),
            *args,
        ]  # fmt: skip
        server = cls(proc=_spawn(cmd, env), tmp_dir=tmp_dir)
        ready = server._wait_ready("server_ready")
        server.port, server.stats_port = ready["port"], ready["stats_port"]
        server.agent_port = ready.get("agent_port")
        return server

    def _wait_ready(self, event: str) -> dict[str, Any]:
        threading.Thread(target=self._drain, daemon=True).start()
        try:
            ready = wait_until(
                lambda: self.event(event) or self.proc.poll() is not None, READY_TIMEOUT_S, event
            )
        except AssertionError:
            self.stop()  # (never ready: not left running after the test)
            raise
        if ready is True:
            raise AssertionError(f"{self.proc.args!r} exited {self.proc.returncode}: {self.lines}")
        return dict(ready)

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def job_dirs(self) -> list[Path]:
        """The directories of jobs the server has now (in its one ``distlb-jobs-*``):
        those with a job's source in them. (The sandboxes it keeps ready for the next
        jobs have directories too, without one; and the server's ``owner`` file says
        whose the directory is: server/sandbox/jobs_root.py.)"""
        return [
            entry
            for root in self.tmp_dir.glob("distlb-jobs-*")
            for entry in root.iterdir()
            if (not entry.is_dir() and entry.name != "owner") or any(entry.glob("input*"))
        ]

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        found = []
        for line in list(self.lines):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if name is None or event.get("event") == name:
                found.append(event)
        return found

    def event(self, name: str) -> dict[str, Any] | None:
        """The latest ``name`` event read so far (its output is read by a thread, so a
        line the process has just written may not be here yet: see :meth:`logged`)."""
        events = self.events(name)
        return events[-1] if events else None

    def logged(self, name: str, timeout_s: float = 10.0) -> dict[str, Any]:
        """The latest ``name`` event, waiting for one to be read (the process may have
        written it before the reply that the test has already received)."""
        found: dict[str, Any] = wait_until(lambda: self.event(name), timeout_s, f"a {name} line")
        return found

    def http(self, path: str) -> str:
        url = f"http://127.0.0.1:{self.stats_port}{path}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode())

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.http("/status"))
        return result

    def counters(self) -> dict[str, int]:
        counters: dict[str, int] = self.status()["counters"]
        return counters

    def stop(self, timeout_s: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class StartServer(Protocol):
    """The ``start_server`` fixture (tests/conftest.py): starts a :class:`ServerProcess`
    with ``args`` as its flags, stopped when the test ends."""

    def __call__(
        self, *args: str, path_prepend: str | None = None, prefix: list[str] | None = None
    ) -> ServerProcess: ...


def _stat_fields() -> list[tuple[int, list[str]]]:
    """Each process's pid and the fields of its /proc stat after the command name
    (state, ppid, pgrp, session, ...)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                raw = stat.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: split after the last ')'.
        found.append((int(entry), raw[raw.rindex(")") + 2 :].split()))
    return found


def process_table() -> list[tuple[int, int, int, str]]:
    """(pid, ppid, pgid, state) of every process."""
    return [(pid, int(f[1]), int(f[2]), f[0]) for pid, f in _stat_fields()]


def live_session_members(sid: int) -> list[int]:
    """Processes of session ``sid`` that are not zombies."""
    return [pid for pid, f in _stat_fields() if int(f[3]) == sid and f[0] != "Z"]


def live_group_members(pgid: int) -> list[int]:
    """Processes of process group ``pgid`` that are not zombies."""
    return [pid for pid, _, group, state in process_table() if group == pgid and state != "Z"]


def live_children(pid: int) -> list[int]:
    """Live children of ``pid``, but for the sandboxes a server keeps ready for its next
    jobs (server/sandbox/warm.py: each waits in a shell reading its command line)."""
    return [
        p
        for p, ppid, _, state in process_table()
        if ppid == pid and state != "Z" and b"read -r line" not in _cmdline(p)
    ]


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read()
    except OSError:
        return b""


def hold_a_slot(port: int) -> socket.socket:
    """A connection that sends a whole request for ``hang-cc`` (a stand-in compiler that
    never finishes, tests/support/compilers.py): it holds a compile slot until closed."""
    from wire import Request, encode_request

    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(encode_request(Request(1, ("hang-cc", "-c", "h.c", "-o", "h.o"), b"int h;\n")))
    return sock


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_pair() -> int:
    """A port P such that P and P+1 are free (a server's port and its status port, at
    one port on several loopback addresses)."""
    for _ in range(50):
        port = free_port()
        if port < 65000 and not any(port_open(p) for p in (port, port + 1)):
            return port
    raise AssertionError("no free port pair")


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Distccd:
    """Debian's real distccd on loopback, for comparisons and as a balancer backend."""

    def __init__(
        self,
        *,
        jobs: int = 2,
        stats: bool = False,
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.stats_port = free_port() if stats else None
        cmd = [
            "distccd", "--daemon", "--no-detach", "--listen", "127.0.0.1",
            "--port", str(self.port), "--allow", "127.0.0.1", "--jobs", str(jobs),
            *extra_args, "--log-stderr", "--log-level", "warning",
        ]  # fmt: skip
        if os.geteuid() == 0:
            cmd += ["--user", "distccd"]
        if self.stats_port:
            cmd += ["--stats", "--stats-port", str(self.stats_port)]
        # Its log is not read: a pipe nobody drains would stall it once full. A session
        # of its own: its compilers (each in a process group of its own) are found by it
        # when it stops, also one that outlives it (a compile that hangs).
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        wait_until(lambda: port_open(self.port) or self.proc.poll() is not None, 30, "distccd")
        if self.proc.poll() is not None:
            raise AssertionError(f"distccd {' '.join(extra_args)} exited {self.proc.returncode}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # What it started and left running (distccd does not stop a hanging compile):
        # the processes of the session made for it, by their ids.
        for pid in live_session_members(self.proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@dataclass
class BalancerProcess(ServerProcess):
    """A real distlb-balancer on loopback port 0 (``stats_port`` is its admin port)."""

    @classmethod
    def start_balancer(cls, args: list[str], config_file: Path | None = None) -> BalancerProcess:
        # Port 0 (a free one) for each port the config file does not name: flags win
        # over the file, and a test that reloads a port must have it in the file.
        named = set(tomllib.loads(config_file.read_text())) if config_file else set()
        ports = [arg for key in ("port", "admin-port") if key not in named
                 for arg in (f"--{key}", "0")]  # fmt: skip
        cmd = [
            *role_command("balancer"),
            "--listen", "127.0.0.1",
            *ports,
            "--log-format", "json",
            *(["--config", str(config_file)] if config_file else []),
            # Patient defaults for a loaded 2-core test machine (a test's own flags,
            # which come later, win): jobs wait longer for a slot, probes for a reply.
            *([] if config_file else ["--queue-timeout", "10", "--probe-timeout", "3"]),
            # The stand-in compilers (tests/support/compilers.py) are not compiler-shaped.
            *(arg for name in STAND_INS for arg in ("--allow-compiler", name)),
            *args,
        ]  # fmt: skip
        balancer = cls(proc=_spawn(cmd), tmp_dir=Path("/nonexistent"))
        ready = balancer._wait_ready("balancer_ready")
        balancer.port, balancer.stats_port = ready["port"], ready["admin_port"]
        return balancer

    def backend(self, name: str) -> dict[str, Any]:
        for backend in self.status()["backends"]:
            if backend["name"] == name:
                return dict(backend)
        raise AssertionError(f"no backend {name} in {self.status()}")

    def totals(self) -> dict[str, int]:
        return dict(self.status()["totals"])

    def wait_healthy(self, count: int, timeout_s: float = 30) -> None:
        wait_until(lambda: self.totals()["healthy_backends"] >= count, timeout_s,
                   f"{count} healthy backends")  # fmt: skip


class StartBalancer(Protocol):
    """The ``start_balancer`` fixture (tests/conftest.py): starts a
    :class:`BalancerProcess` with ``args`` as its flags, stopped when the test ends."""

    def __call__(self, *args: str, config_file: Path | None = None) -> BalancerProcess: ...
