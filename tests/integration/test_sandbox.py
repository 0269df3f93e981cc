"""Every compile in a sandbox of its own: a job reads no server file, reaches no
network, touches no other job, and exhausts nothing; the server never trusts the
job's files. With real gcc and g++ where the harm comes from the source, and a
stand-in for a subverted compiler (``evil-cc``) where it comes from the compiler.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import signal
import socket
import struct
import subprocess
import termios
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import compile_remote
from tests.support.compilers import alive, running
from tests.support.sandbox_jobs import compile_on, evil, incbin, read_a_running_jobs_source
from tests.support.servers import (
    JOB_UIDS,
    ServerProcess,
    StartServer,
    process_table,
    wait_until,
)
from wire import Request

pytestmark = pytest.mark.integration

SECRET = "DISTLB_SANDBOX_SECRET_7c1d"
ROOT = os.geteuid() == 0
JOB_RANGE = range(JOB_UIDS[0], JOB_UIDS[1] + 1)


def _waiting_sandboxes() -> set[int]:
    """Processes of the sandboxes a server keeps ready for its next jobs: each waiting
    shell (server/sandbox/warm.py) and the bubblewrap processes above it."""
    table = {pid: ppid for pid, ppid, _, _ in process_table()}
    waiting = set()
    for pid in table:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if b"read -r line" in cmdline.read():
                    waiting.add(pid)
        except OSError:
            continue
    for pid in list(waiting):
        parent = table.get(pid)
        while parent is not None and parent not in waiting and _uid_of(parent) in JOB_RANGE:
            waiting.add(parent)
            parent = table.get(parent)
    return waiting


def _uid_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            return int(next(x for x in status if x.startswith("Uid:")).split()[1])
    except (OSError, StopIteration):
        return -1


def _job_uid_processes() -> list[int]:
    """Live processes that run as a per-job uid (what would be left of a job), but for
    the sandboxes kept ready for the next jobs."""
    found = []
    ready = _waiting_sandboxes()
    for pid, _, _, state in process_table():
        if pid in ready:
            continue
        try:
            with open(f"/proc/{pid}/status") as status:
                uid_line = next(line for line in status if line.startswith("Uid:"))
        except (OSError, StopIteration):
            continue
        if state != "Z" and JOB_UIDS[0] <= int(uid_line.split()[1]) <= JOB_UIDS[1]:
            found.append(pid)
    return found


@pytest.fixture
def secret_file(shared_tmp: Path) -> Path:
    """A world-readable file outside any job, holding a secret."""
    path = shared_tmp / "world-readable.txt"
    path.write_text(SECRET + "\n")
    path.chmod(0o644)
    return path


@pytest.mark.parametrize("compiler", ["gcc", "g++"])
def test_incbin_of_files_outside_the_job_gets_none_of_their_bytes(
    start_server: StartServer, secret_file: Path, compiler: str
) -> None:
    server = start_server("--jobs", "2")
    for path in (str(secret_file), "/etc/passwd"):
        reply = compile_on(server, (compiler, "-c", "x.c", "-o", "x.o"), incbin(path))
        assert reply.status != 0, path
        assert SECRET.encode() not in reply.obj + reply.stderr
        assert b"root:" not in reply.obj + reply.stderr
        assert b"file not found" in reply.stderr or b"No such file" in reply.stderr, reply.stderr


def test_without_the_sandbox_the_same_source_does_read_the_file(
    start_server: StartServer, secret_file: Path
) -> None:
    """The test above can fail: --sandbox none compiles the .incbin, secret and all."""
    server = start_server("--jobs", "1", "--sandbox", "none")
    reply = compile_on(server, ("gcc", "-c", "x.c", "-o", "x.o"), incbin(str(secret_file)))
    assert reply.status == 0
    assert SECRET.encode() in reply.obj
    assert server.status()["sandbox"]["mode"] == "none"
    assert server.logged("sandbox_off")


def test_a_job_cannot_read_another_running_jobs_source(
    start_server: StartServer, fake_compilers: tuple[Path, Path]
) -> None:
    bin_dir, _ = fake_compilers
    server = start_server("--jobs", "2", "--compiler", "slow-cc", "--compiler", "gcc",
                          path_prepend=str(bin_dir))  # fmt: skip
    reply, _ = read_a_running_jobs_source(server, SECRET)
    assert reply.status != 0
    assert SECRET.encode() not in reply.obj + reply.stderr


@pytest.mark.skipif(not ROOT, reason="per-job uids need root")
def test_each_job_runs_as_a_uid_of_its_own_niced_without_groups_in_its_own_session(
    start_server: StartServer, fake_compilers: tuple[Path, Path]
) -> None:
    bin_dir, _ = fake_compilers
    server = start_server("--jobs", "2", "--compiler", "whoami-cc", "--nice", "7",
                          path_prepend=str(bin_dir))  # fmt: skip
    seen = []
    for _ in range(2):
        reply = compile_on(server, ("whoami-cc", "-c", "a.c", "-o", "a.o"), b"int a;\n")
        assert reply.status == 0 and reply.obj, reply.stderr
        line = next(x for x in reply.stderr.decode().splitlines() if x.startswith("whoami:"))
        uid, groups, nice, pid, session = (f.strip() for f in line[len("whoami:") :].split("|"))
        assert JOB_UIDS[0] <= int(uid) <= JOB_UIDS[1]
        assert groups.split() == [uid], "the job kept supplementary groups"
        assert int(nice) == 7
        # Inside its pid namespace a session whose leader is outside reads as 0: this
        # one is led by a process of the job (the sandbox's own init, or the compiler).
        assert 0 < int(session) <= int(pid), "the compiler shares a session from outside"
        seen.append(uid)
    assert seen[0] != seen[1], "two jobs ran as the same uid"


@pytest.mark.skipif(not ROOT, reason="compilers change user only when started as root")
def test_without_the_sandbox_compiles_run_as_the_compile_user(
    start_server: StartServer, fake_compilers: tuple[Path, Path]
) -> None:
    import pwd

    bin_dir, _ = fake_compilers
    server = start_server("--sandbox", "none", "--compiler", "whoami-cc", "--user", "nobody",
                          path_prepend=str(bin_dir))  # fmt: skip
    reply = compile_on(server, ("whoami-cc", "-c", "a.c", "-o", "a.o"), b"int a;\n")
    assert reply.status == 0, reply.stderr
    line = next(x for x in reply.stderr.decode().splitlines() if x.startswith("whoami:"))
    assert int(line[len("whoami:") :].split("|")[0]) == pwd.getpwnam("nobody").pw_uid


# --- a subverted compiler, contained ------------------------------------------------


@pytest.fixture
def listener() -> Iterator[tuple[int, list[object]]]:
    """A loopback listener that records every connection it gets."""
    sock = socket.create_server(("127.0.0.1", 0))
    accepted: list[object] = []

    def serve() -> None:
        while True:
            try:
                conn, peer = sock.accept()
            except OSError:
                return
            accepted.append(peer)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1], accepted
    sock.close()
    thread.join(5)


@pytest.fixture
def evil_server(start_server: StartServer, fake_compilers: tuple[Path, Path]) -> ServerProcess:
    bin_dir, _ = fake_compilers
    return start_server("--jobs", "2", "--compiler", "evil-cc", "--compiler", "gcc",
                        "--job-processes", "32", "--job-open-files", "256",
                        path_prepend=str(bin_dir))  # fmt: skip


def _assert_healthy(server: ServerProcess) -> None:
    reply = compile_on(server, ("gcc", "-c", "ok.c", "-o", "ok.o"), b"int ok;\n")
    assert reply.status == 0 and reply.obj.startswith(b"\x7fELF")
    wait_until(lambda: server.job_dirs() == [], 5, "the job dirs removed")
    if ROOT:
        wait_until(lambda: _job_uid_processes() == [], 5, "no process of a job left")


def test_subverted_compiler_reads_no_file_outside_the_job(
    evil_server: ServerProcess, secret_file: Path
) -> None:
    reply = evil(evil_server, f"read {secret_file}")
    assert SECRET.encode() not in reply.stderr + reply.obj
    assert b"No such file" in reply.stderr
    _assert_healthy(evil_server)


def test_subverted_compiler_writes_no_file_outside_the_job(
    evil_server: ServerProcess, shared_tmp: Path
) -> None:
    target_dir = shared_tmp / "open-dir"
    target_dir.mkdir(mode=0o777)
    target_dir.chmod(0o777)  # anyone may write here: only the sandbox stands in the way
    target = target_dir / "pwned"
    reply = evil(evil_server, f"write {target}")
    assert reply.status != 0
    assert not target.exists()
    _assert_healthy(evil_server)


def test_subverted_compiler_reaches_no_network(
    evil_server: ServerProcess, listener: tuple[int, list[object]]
) -> None:
    port, accepted = listener
    reply = evil(evil_server, f"connect {port}")
    assert reply.status != 0
    assert b"Connection refused" in reply.stderr or b"unreachable" in reply.stderr, reply.stderr
    assert accepted == []
    _assert_healthy(evil_server)


@pytest.mark.skipif(not ROOT, reason="job processes are found by their per-job uid")
def test_a_process_that_leaves_the_session_dies_with_the_job(
    evil_server: ServerProcess, fake_compilers: tuple[Path, Path]
) -> None:
    reply = evil(evil_server, "outlive")
    assert reply.status == 0, reply.stderr  # the job itself compiled
    wait_until(lambda: _job_uid_processes() == [], 5, "the setsid child gone with its job")
    _assert_healthy(evil_server)


def test_forking_past_the_process_bound_fails_the_job_not_the_server(
    evil_server: ServerProcess, fake_compilers: tuple[Path, Path]
) -> None:
    bin_dir, _ = fake_compilers
    reply = evil(evil_server, "fork")
    assert reply.status != 0
    assert b"ran into its limit: 32 processes" in reply.stderr, reply.stderr
    assert evil_server.status()["limits_hit"].get("processes") == 1
    assert evil_server.logged("job_limit")["limit"] == "processes"
    wait_until(lambda: alive(running(bin_dir / "evil-cc")) == [], 5, "the job's processes gone")
    _assert_healthy(evil_server)


def test_opening_past_the_file_bound_fails_the_job(evil_server: ServerProcess) -> None:
    reply = evil(evil_server, "files")
    assert reply.status != 0
    assert b"Too many open files" in reply.stderr
    assert b"ran into its limit: 256 open files" in reply.stderr
    assert evil_server.status()["limits_hit"].get("open_files") == 1
    _assert_healthy(evil_server)


@pytest.mark.parametrize("sandbox", ["bwrap", "none"])
@pytest.mark.parametrize("planted", ["symlink /etc/shadow", "fifo", "socket", "hardlink {victim}"])
def test_an_output_replaced_by_a_link_or_fifo_is_not_sent(
    start_server: StartServer,
    fake_compilers: tuple[Path, Path],
    secret_file: Path,
    sandbox: str,
    planted: str,
) -> None:
    """The server's own check, with and without the sandbox around the job. (A Unix
    socket could not even be opened: the job's handler crashed, and the client got no
    reply.)"""
    bin_dir, _ = fake_compilers
    server = start_server("--jobs", "1", "--sandbox", sandbox, "--compiler", "evil-cc",
                          "--compiler", "gcc", path_prepend=str(bin_dir))  # fmt: skip
    # A file elsewhere that the compile user owns (another job's object, say): the
    # kernel lets it make a second name for that one.
    victim = secret_file.parent / "victim.o"
    victim.write_text(SECRET)
    if ROOT and sandbox == "none":
        import pwd

        user = pwd.getpwnam(str(server.status()["sandbox"]["job_uids"]))
        os.chown(victim, user.pw_uid, user.pw_gid)
    reply = evil(server, planted.format(victim=victim))
    assert reply.status != 0
    assert reply.obj == b""
    assert b"root:" not in reply.stderr and SECRET.encode() not in reply.stderr
    if not planted.startswith("hardlink") or sandbox == "none":
        # (in the sandbox a hard link to a file outside cannot even be made)
        assert server.status()["limits_hit"].get("output") == 1, reply.stderr
    assert server.status()["counters"]["ok"] == 0  # the status page answers, at once
    _assert_healthy(server)


def test_a_job_dir_1500_levels_deep_is_removed_and_its_uid_given_back(
    start_server: StartServer, fake_compilers: tuple[Path, Path]
) -> None:
    """A job that nests directories 1,500 deep: the server removes them all (it walked
    them recursively, and Python's recursion limit stopped it: the job got no reply, its
    directory stayed and its uid never came back). Five uids (the start check needs four
    at once): five such jobs in a row, then one more, need every uid back."""
    bin_dir, _ = fake_compilers
    server = start_server("--jobs", "1", "--job-uids", "900000000-900000004",
                          "--compiler", "evil-cc", "--compiler", "gcc",
                          path_prepend=str(bin_dir))  # fmt: skip
    for _ in range(5):
        reply = evil(server, "deep 1500")
        assert reply.status == 0 and reply.obj, reply.stderr
    assert server.status()["job_dirs"]["left"] == 0
    assert server.events("job_dir_left") == []
    _assert_healthy(server)


def test_a_job_cannot_make_a_user_namespace(evil_server: ServerProcess) -> None:
    """A user namespace of its own would give a job every capability over new mount and
    network namespaces: kernel code that no compile needs, and the way many kernel
    exploits begin. The sandbox turns them off (bubblewrap's --disable-userns)."""
    reply = evil(evil_server, "userns")
    assert reply.status == 0, reply.stderr  # the job itself compiled
    assert b"no user namespace" in reply.stderr, reply.stderr
    _assert_healthy(evil_server)


def test_a_job_opens_no_pseudo_terminal(evil_server: ServerProcess) -> None:
    """Each pty a job opened counted against the host's kernel.pty.max (bubblewrap's
    --dev brings a devpts instance): the sandbox's /dev has no /dev/ptmx or /dev/pts."""
    reply = evil(evil_server, "pty")
    assert reply.status == 0, reply.stderr
    assert b"no pty" in reply.stderr and b"pty opened" not in reply.stderr, reply.stderr


def test_a_source_that_names_dev_ptmx_fails_at_once_instead_of_holding_its_slot(
    start_server: StartServer,
) -> None:
    """A line marker naming /dev/ptmx, then an error: gcc's diagnostic quotes line 1 of
    that file, and reading a pty master blocks (it held a slot for the job's whole
    lifetime). In the sandbox there is no /dev/ptmx: the compile fails with its error."""
    server = start_server("--jobs", "1", "--job-lifetime", "30")
    reply = compile_on(server, ("gcc", "-c", "p.c", "-o", "p.o"), b'# 1 "/dev/ptmx"\nint x = ;\n')
    assert reply.status != 0
    assert b"error: expected expression" in reply.stderr, reply.stderr
    assert server.status()["limits_hit"] == {}  # (not ended by its lifetime)
    assert server.events("compile_killing") == []


def test_a_job_writes_nothing_into_the_sandboxs_own_root_or_dev(evil_server: ServerProcess) -> None:
    """The sandbox's own / and /dev are bubblewrap's tmpfs, in memory and without a size:
    a subverted compiler filled 3 GB of RAM there, past every job bound (they bound
    address space and any one file). Now both are read-only: the job's directory is its
    only writable place, as docs/security.md says."""
    reply = evil(evil_server, "fill")
    assert reply.status == 0, reply.stderr  # the job itself compiled
    for path in (b"/fill", b"/dev/fill", b"/dev/shm/fill"):
        assert b"no room at " + path in reply.stderr, reply.stderr
    assert b"Read-only file system" in reply.stderr
    _assert_healthy(evil_server)


def test_memory_past_the_bound_fails_the_compile_with_the_reason(
    start_server: StartServer,
) -> None:
    # (clang alone maps more than 100 MB: the server would refuse to start with it)
    server = start_server("--jobs", "1", "--job-memory-mb", "100", "--compiler", "gcc")
    pairs = ",".join(f"{{{i},{i}}}" for i in range(400_000))
    source = f"struct s {{ int a, b; }};\nstruct s big[] = {{{pairs}}};\n".encode()
    reply = compile_on(server, ("gcc", "-c", "big.c", "-o", "big.o"), source)
    assert reply.status != 0
    assert b"ran into its limit: 100 MB of memory" in reply.stderr, reply.stderr[-500:]
    assert server.status()["limits_hit"].get("memory") == 1
    _assert_healthy(server)


def test_a_file_past_the_size_bound_fails_the_compile_and_fills_no_disk(
    start_server: StartServer,
) -> None:
    server = start_server("--jobs", "1", "--job-file-mb", "1")
    source = b'__asm__(".data\\n.fill 2000000000,1,1\\n.text");\nint x;\n'
    reply = compile_on(server, ("gcc", "-c", "big.c", "-o", "big.o"), source)
    assert reply.status != 0
    assert b"File size limit exceeded" in reply.stderr
    assert b"ran into its limit: a file may hold 1 MB" in reply.stderr
    assert server.status()["limits_hit"].get("file_size") == 1
    _assert_healthy(server)


def test_status_names_the_sandbox_mounts_and_limits(start_server: StartServer) -> None:
    server = start_server("--jobs", "1")
    sandbox = server.status()["sandbox"]
    assert sandbox["mode"] == "bwrap"
    assert sandbox["network"] == "none"
    assert "/usr" in sandbox["mounts"]
    assert not any(m.startswith(("/home", "/root", "/var")) for m in sandbox["mounts"])
    assert sandbox["limits"]["core_dumps"] is False
    assert "distlb_server_sandboxed 1.0" in server.http("/metrics")


def _parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


@pytest.mark.parametrize("ending", ["client gone", "compiler done"])
def test_a_job_that_took_over_its_sandboxs_init_still_dies_with_it(
    start_server: StartServer, fake_compilers: tuple[Path, Path], ending: str
) -> None:
    """A subverted compiler runs as the same uid as bubblewrap's init in its sandbox,
    so it can ptrace that init and clear the signal it gets when its monitor dies; it
    then outlived the job (its uid handed to the next job). The test plays the
    compiler's part: gdb has the init of a running linger-cc job (which leaves a child
    behind) call prctl(PR_SET_PDEATHSIG, 0); then the client goes away, or the compile
    ends as it should (bubblewrap's monitor exits with the job's first process, while
    the init waits for the child); either way nothing of the job is left."""
    gdb = shutil.which("gdb")
    if gdb is None:
        pytest.fail("gdb is missing: scripts/bootstrap.sh test installs it", pytrace=False)
    bin_dir, _ = fake_compilers
    server = start_server("--jobs", "1", "--compiler", "linger-cc", path_prepend=str(bin_dir))
    init = 0

    async def scenario() -> None:
        nonlocal init
        job = asyncio.create_task(compile_remote(
            "127.0.0.1", server.port, Request(1, ("linger-cc", "-c", "g.c"), b"int g;\n"),
            timeout_s=60,
        ))  # fmt: skip
        pids = await asyncio.to_thread(
            wait_until, lambda: running(bin_dir / "linger-cc"), 30, "the gated compile running"
        )
        gate = min(pids)  # the compiler's shell; its parent is the sandbox's init
        init = _parent_of(gate)
        assert b"bwrap" in await asyncio.to_thread(Path(f"/proc/{init}/cmdline").read_bytes)
        out = await asyncio.to_thread(subprocess.run, [
            gdb, "-p", str(init), "-batch", "-ex", "call (int)prctl(1, 0)", "-ex", "detach",
        ], capture_output=True, text=True, timeout=120)  # fmt: skip
        assert "$1 = 0" in out.stdout, out.stdout + out.stderr
        if ending == "client gone":
            job.cancel()  # the server ends the job
            with contextlib.suppress(asyncio.CancelledError):
                await job
        else:
            (bin_dir / "gate-cc.open").touch()
            assert (await job).status == 0

    try:
        asyncio.run(scenario())
        if ending == "client gone":
            server.logged("compile_killing")
        wait_until(lambda: not alive([init]), 10, "the sandbox's init gone")
        wait_until(lambda: _job_uid_processes() == [], 10, "no process of the job left")
    finally:
        (bin_dir / "gate-cc.open").touch()
        if init and alive([init]):
            os.kill(init, signal.SIGKILL)  # (the job's init, by its pid: not left behind)


def test_an_argument_with_a_newline_goes_to_a_waiting_sandbox_like_any(
    start_server: StartServer, fake_compilers: tuple[Path, Path]
) -> None:
    """A waiting sandbox gets its command as one line: a newline in an argument is sent
    quoted, and reaches the compiler as it came, so such a job, too, starts in a
    sandbox whose init was pinned first (a cold start of the old way could not be)."""
    bin_dir, _ = fake_compilers
    server = start_server("--jobs", "1", "--compiler", "whoami-cc", path_prepend=str(bin_dir))
    wait_until(lambda: server.status()["warm_sandboxes"]["ready"] == 1, 30, "a sandbox ready")
    # (a prefix map's old prefix is a path, which may hold any character but NUL; a -D
    # value may not hold a newline, which would end its directive in a preprocessor,
    # and a linker option is not sent on at all)
    mapped = "-fdebug-prefix-map=/V=1\nnot part of it 'quoted' \"too\"=."
    argv = ("whoami-cc", mapped, "-c", "v.c", "-o", "v.o")
    reply = compile_on(server, argv, b"int v;\n")
    assert reply.status == 0, reply.stderr
    assert f"|{mapped}|".encode() in reply.stderr, reply.stderr
    warm = server.status()["warm_sandboxes"]
    assert (warm["taken"], warm["cold"]) == (1, 0), warm


def _waiting_shell(server: ServerProcess) -> int | None:
    """The shell of the sandbox that ``server`` keeps waiting for its next command (the
    ``sh`` under bubblewrap's two processes; other servers' are not its descendants),
    once it is there."""
    table = {pid: ppid for pid, ppid, _, _ in process_table()}
    for pid, parent in table.items():
        ancestors = set()
        while parent in table and parent not in ancestors:
            ancestors.add(parent)
            parent = table[parent]
        with contextlib.suppress(OSError):
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if server.proc.pid in ancestors and comm == "sh" and b"read -r line" in cmdline:
                return pid
    return None


def _queued_in_pipe(pid: int) -> int:
    """Bytes written to ``pid``'s stdin (a pipe) that it has not read."""
    fd = os.open(f"/proc/{pid}/fd/0", os.O_RDONLY | os.O_NONBLOCK)
    try:
        queued: int = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]
        return queued
    finally:
        os.close(fd)


def test_a_long_command_line_goes_to_its_sandbox_without_stopping_the_server(
    start_server: StartServer,
) -> None:
    """A job's command line is written to its waiting sandbox's shell, which reads it a
    byte at a time: a blocking write of 1 MiB held the server's loop 0.3-0.45 s a job
    (/status p50 5 ms -> 280 ms). The test stops that shell, so the write cannot end: the
    status page still answers while the pipe is full, and the job compiles once the
    shell goes on."""
    server = start_server("--jobs", "1")
    shell: int = wait_until(lambda: _waiting_shell(server), 30, "a sandbox waiting")
    # More than the pipe holds (64 KiB), less than gcc can pass on: it gives cc1 all
    # its options in one variable, COLLECT_GCC_OPTIONS, and exec takes 128 KiB at most.
    defines = tuple(f"-DV{i}={'x' * 25_000}" for i in range(4))
    replies: list[object] = []
    job = threading.Thread(target=lambda: replies.append(
        compile_on(server, ("gcc", *defines, "-c", "x.c", "-o", "x.o"), b"int x;\n")
    ))  # fmt: skip
    os.kill(shell, signal.SIGSTOP)
    try:
        job.start()
        wait_until(lambda: _queued_in_pipe(shell) >= 60_000, 30, "the pipe to the shell full")
        status = server.status()  # (the loop was stuck in the write: no answer at all)
        assert status["busy"] == 1 and _queued_in_pipe(shell) >= 60_000
    finally:
        os.kill(shell, signal.SIGCONT)
        job.join(60)
    assert [getattr(reply, "status", None) for reply in replies] == [0], [
        getattr(reply, "stderr", b"")[-300:] for reply in replies
    ]


def test_the_next_jobs_sandbox_is_set_up_while_a_job_compiles(
    start_server: StartServer, fake_compilers: tuple[Path, Path]
) -> None:
    """A job finds its sandbox ready, and neither it nor its reply waits for the next
    job's: that one is set up while the job compiles (gate-cc holds the compile until
    the test has seen the next sandbox waiting)."""
    bin_dir, _ = fake_compilers
    server = start_server("--jobs", "1", "--compiler", "gate-cc", path_prepend=str(bin_dir))

    def warm() -> dict[str, int]:
        counts: dict[str, int] = server.status()["warm_sandboxes"]
        return counts

    wait_until(lambda: warm()["ready"] == 1, 30, "a sandbox ready before any job")
    replies: list[object] = []
    job = threading.Thread(target=lambda: replies.append(
        compile_on(server, ("gate-cc", "-c", "g.c", "-o", "g.o"), b"int g;\n")
    ))  # fmt: skip
    job.start()
    try:
        wait_until(lambda: running(bin_dir / "gate-cc"), 30, "the gated compile running")
        state = wait_until(
            lambda: (w := warm())["ready"] == 1 and w, 30, "the next sandbox ready meanwhile"
        )
        assert state["taken"] == 1 and state["cold"] == 0, state
        assert _waiting_sandboxes(), "no sandbox waits for the next job"
    finally:
        (bin_dir / "gate-cc.open").touch()
        job.join(60)
    assert [getattr(reply, "status", None) for reply in replies] == [0]
    assert compile_on(server, ("gate-cc", "-c", "x.c", "-o", "x.o"), b"int x;\n").status == 0
    after = warm()
    assert (after["taken"], after["cold"]) == (2, 0), after


def test_the_sandboxes_kept_ready_follow_the_compilers_jobs_use(
    start_server: StartServer,
) -> None:
    """Each compiler's jobs run in a sealed sandbox of its own (its toolchain only): the
    sandbox kept ready is of the kind the last jobs asked for. gcc's is ready before any
    job (cc's binary); a clang job after it starts its own, and the next clang job finds
    clang's ready."""
    server = start_server("--jobs", "1", "--compiler", "gcc", "--compiler", "clang")

    def warm() -> tuple[int, int, int]:
        w = server.status()["warm_sandboxes"]
        return w["ready"], w["taken"], w["cold"]

    wait_until(lambda: warm() == (1, 0, 0), 30, "a sandbox ready before any job")
    for compiler, seen in (("gcc", (1, 0)), ("clang", (1, 1)), ("clang", (2, 1))):
        reply = compile_on(server, (compiler, "-c", "x.c", "-o", "x.o"), b"int x;\n")
        assert reply.status == 0, reply.stderr
        wait_until(lambda seen=seen: warm() == (1, *seen), 30, f"{seen} after {compiler}")
    kinds = {name: c["sandbox"] for name, c in server.status()["compilers"].items()}
    assert set(kinds.values()) == {"sealed"} and {"gcc", "clang"} <= set(kinds), kinds


def test_without_the_sandbox_the_stand_in_does_its_harm(
    start_server: StartServer,
    fake_compilers: tuple[Path, Path],
    secret_file: Path,
    shared_tmp: Path,
    listener: tuple[int, list[object]],
) -> None:
    """The containment tests above can fail: with --sandbox none the same stand-in
    reads the secret, writes outside its job and reaches the listener."""
    bin_dir, _ = fake_compilers
    server = start_server("--jobs", "1", "--sandbox", "none", "--compiler", "evil-cc",
                          path_prepend=str(bin_dir))  # fmt: skip
    assert SECRET.encode() in evil(server, f"read {secret_file}").stderr
    target_dir = shared_tmp / "open-dir"
    target_dir.mkdir(mode=0o777)
    target_dir.chmod(0o777)
    evil(server, f"write {target_dir / 'pwned'}")
    assert (target_dir / "pwned").exists()
    port, accepted = listener
    evil(server, f"connect {port}")
    wait_until(lambda: accepted, 5, "the stand-in's connection")
