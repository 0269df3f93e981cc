"""A server that is not root: ``--user`` is refused, and the sandbox alone keeps each
job apart from the server, from the machine and from the other jobs, although every
job runs as the server's own uid (each in a user namespace of its own).

The tests are root; each starts its server as ``nobody`` (tests/support/servers.py
``as_unprivileged_user``), with real gcc and g++ and the ``evil-cc`` stand-in for a
subverted compiler.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path
from typing import Protocol

import pytest

from tests.support.compilers import alive, running
from tests.support.sandbox_jobs import compile_on, evil, incbin, read_a_running_jobs_source
from tests.support.servers import (
    UNPRIVILEGED,
    ServerProcess,
    StartServer,
    as_unprivileged_user,
    server_command,
    wait_until,
)

pytestmark = pytest.mark.integration

SECRET = "DISTLB_UNPRIVILEGED_SECRET_51ae"


class Start(Protocol):
    """The ``start_unprivileged`` fixture: ``start_server`` as the unprivileged user."""

    def __call__(self, *args: str, path_prepend: str | None = None) -> ServerProcess: ...


@pytest.fixture
def start_unprivileged(start_server: StartServer) -> Start:
    prefix = as_unprivileged_user()

    def start(*args: str, path_prepend: str | None = None) -> ServerProcess:
        server = start_server(*args, path_prepend=path_prepend, prefix=prefix)
        assert _uid_of(server.proc.pid) == pwd.getpwnam(UNPRIVILEGED).pw_uid
        return server

    return start


@pytest.fixture
def owned_secret(shared_tmp: Path) -> Path:
    """A file the server's own uid may read and write, outside any job (another job's
    object, the server's own state): only the sandbox stands between a job and it."""
    user = pwd.getpwnam(UNPRIVILEGED)
    directory = shared_tmp / "servers-own"
    directory.mkdir(mode=0o700)
    os.chown(directory, user.pw_uid, user.pw_gid)
    path = directory / "secret.txt"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    os.chown(path, user.pw_uid, user.pw_gid)
    return path


def _uid_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(next(x for x in status if x.startswith("Uid:")).split()[1])


def test_user_is_refused_when_the_server_is_not_root(server_tmp: Path) -> None:
    result = subprocess.run(
        [*as_unprivileged_user(), *server_command(), "--listen", "127.0.0.1", "--port", "0",
         "--stats-port", "0", "--tmp-dir", str(server_tmp), "--sandbox", "none",
         "--user", "nobody"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0
    assert "--user needs the server to start as root" in result.stderr, result.stderr


@pytest.mark.parametrize("compiler", ["gcc", "g++"])
def test_a_source_reads_no_file_of_the_machine_nor_of_the_servers_uid(
    start_unprivileged: Start, owned_secret: Path, compiler: str
) -> None:
    server = start_unprivileged("--jobs", "2")
    assert server.status()["sandbox"]["job_uids"].startswith("the server's own")
    ok = compile_on(server, (compiler, "-c", "ok.c", "-o", "ok.o"), b"int ok;\n")
    assert ok.status == 0 and ok.obj.startswith(b"\x7fELF"), ok.stderr
    for path in (str(owned_secret), "/etc/passwd"):
        reply = compile_on(server, (compiler, "-c", "x.c", "-o", "x.o"), incbin(path))
        assert reply.status != 0, path
        assert SECRET.encode() not in reply.obj + reply.stderr
        assert b"root:" not in reply.obj + reply.stderr
        assert b"file not found" in reply.stderr or b"No such file" in reply.stderr


def test_unsandboxed_the_same_source_reads_the_servers_file(
    start_unprivileged: Start, owned_secret: Path
) -> None:
    """The test above can fail: an unprivileged server without the sandbox compiles the
    .incbin of a file its uid may read."""
    server = start_unprivileged("--jobs", "1", "--sandbox", "none")
    reply = compile_on(server, ("gcc", "-c", "x.c", "-o", "x.o"), incbin(str(owned_secret)))
    assert reply.status == 0, reply.stderr
    assert SECRET.encode() in reply.obj


def test_a_job_cannot_read_another_running_jobs_source_of_the_same_uid(
    start_unprivileged: Start, fake_compilers: tuple[Path, Path]
) -> None:
    bin_dir, _ = fake_compilers
    server = start_unprivileged("--jobs", "2", "--compiler", "slow-cc", "--compiler", "gcc",
                                path_prepend=str(bin_dir))  # fmt: skip
    reply, owner = read_a_running_jobs_source(server, SECRET)
    assert owner == pwd.getpwnam(UNPRIVILEGED).pw_uid  # the same uid as the reading job
    assert reply.status != 0
    assert SECRET.encode() not in reply.obj + reply.stderr


@pytest.fixture
def evil_unprivileged(
    start_unprivileged: Start, fake_compilers: tuple[Path, Path]
) -> ServerProcess:
    bin_dir, _ = fake_compilers
    return start_unprivileged("--jobs", "2", "--compiler", "evil-cc", "--compiler", "gcc",
                              "--job-processes", "32", path_prepend=str(bin_dir))  # fmt: skip


def _assert_healthy(server: ServerProcess, bin_dir: Path) -> None:
    reply = compile_on(server, ("gcc", "-c", "ok.c", "-o", "ok.o"), b"int ok;\n")
    assert reply.status == 0 and reply.obj.startswith(b"\x7fELF"), reply.stderr
    wait_until(lambda: server.job_dirs() == [], 5, "the job dirs removed")
    wait_until(lambda: alive(running(bin_dir / "evil-cc")) == [], 5, "no process of a job left")


def test_a_subverted_compiler_reads_and_writes_nothing_of_the_servers_uid(
    evil_unprivileged: ServerProcess, owned_secret: Path, fake_compilers: tuple[Path, Path]
) -> None:
    reply = evil(evil_unprivileged, f"read {owned_secret}")
    assert SECRET.encode() not in reply.stderr + reply.obj
    assert b"No such file" in reply.stderr
    target = owned_secret.parent / "pwned"  # a directory the server's uid may write
    reply = evil(evil_unprivileged, f"write {target}")
    assert reply.status != 0
    assert not target.exists()
    _assert_healthy(evil_unprivileged, fake_compilers[0])


def test_a_subverted_compiler_reaches_no_network_and_leaves_no_process(
    evil_unprivileged: ServerProcess, fake_compilers: tuple[Path, Path]
) -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        reply = evil(evil_unprivileged, f"connect {listener.getsockname()[1]}")
        assert reply.status != 0
        assert b"Connection refused" in reply.stderr or b"unreachable" in reply.stderr
        with pytest.raises(BlockingIOError):
            listener.accept()
    reply = evil(evil_unprivileged, "outlive")
    assert reply.status == 0, reply.stderr
    # the setsid child (a `sleep 3600` under the stand-in's toolchain) went with its job
    wait_until(lambda: not _sleepers(evil_unprivileged.proc.pid), 5, "the setsid child gone")
    _assert_healthy(evil_unprivileged, fake_compilers[0])


def _sleepers(server_pid: int) -> list[int]:
    """Processes of the server's uid that run ``sleep 3600``."""
    uid = _uid_of(server_pid)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                args = cmdline.read().split(b"\0")
            if args[:2] == [b"sleep", b"3600"] and _uid_of(int(entry)) == uid:
                found.append(int(entry))
        except (OSError, StopIteration):
            continue
    return found


def test_the_process_bound_counts_the_jobs_own_processes_not_the_whole_uids(
    evil_unprivileged: ServerProcess,
) -> None:
    """Every job runs as the server's uid: a bound set outside the job's user namespace
    would count all of that uid's processes (here 40 others, more than the job's 32)."""
    user = pwd.getpwnam(UNPRIVILEGED)
    as_user = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups"]
    others = [subprocess.Popen([*as_user, "--", "sleep", "600"]) for _ in range(40)]
    try:
        reply = compile_on(evil_unprivileged, ("gcc", "-c", "ok.c", "-o", "ok.o"), b"int ok;\n")
        assert reply.status == 0 and reply.obj.startswith(b"\x7fELF"), reply.stderr
    finally:
        for proc in others:
            proc.kill()
            proc.wait()


def test_forking_past_the_process_bound_fails_the_job_not_the_server(
    evil_unprivileged: ServerProcess, fake_compilers: tuple[Path, Path]
) -> None:
    reply = evil(evil_unprivileged, "fork")
    assert reply.status != 0
    assert b"ran into its limit: 32 processes" in reply.stderr, reply.stderr
    assert evil_unprivileged.status()["limits_hit"].get("processes") == 1
    _assert_healthy(evil_unprivileged, fake_compilers[0])
