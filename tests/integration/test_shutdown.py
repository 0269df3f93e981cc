"""SIGTERM: stop accepting, let running jobs finish up to a deadline, then kill them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.support.compilers import alive, running
from tests.support.distcc import start_distcc
from tests.support.servers import StartServer, wait_until

pytestmark = pytest.mark.integration


def _start_client(compiler: str, bin_dir: Path, cwd: Path, port: int) -> subprocess.Popen[str]:
    (cwd / "job.c").write_text("int job(void) { return 7; }\n")
    return start_distcc(
        [compiler, "-c", "job.c", "-o", "job.o"],
        hosts=f"127.0.0.1:{port}",
        cwd=cwd,
        path_prepend=bin_dir,
    )


def test_sigterm_lets_running_job_finish_and_refuses_new_ones(
    start_server: StartServer, fake_compilers: tuple[Path, Path], tmp_path: Path
) -> None:
    bin_dir, _ = fake_compilers
    server = start_server("--jobs", "2", "--compiler", "slow-cc", "--shutdown-grace", "60",
                          path_prepend=str(bin_dir))  # fmt: skip
    client = _start_client("slow-cc", bin_dir, tmp_path, server.port)
    wait_until(lambda: running(bin_dir / "slow-cc"), 30, "the slow compile to start")

    server.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: server.event("server_draining"), 10, "draining to start")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()

    _, stderr = client.communicate(timeout=60)
    assert client.returncode == 0, stderr
    assert (tmp_path / "job.o").exists()
    assert server.proc.wait(30) == 0
    assert server.logged("server_stopped")["counters"]["ok"] == 1


def test_sigterm_kills_jobs_still_running_after_the_grace(
    start_server: StartServer,
    fake_compilers: tuple[Path, Path],
    tmp_path: Path,
    server_tmp: Path,
) -> None:
    bin_dir, _ = fake_compilers
    server = start_server("--jobs", "1", "--compiler", "hang-cc", "--shutdown-grace", "1",
                          path_prepend=str(bin_dir))  # fmt: skip
    client = _start_client("hang-cc", bin_dir, tmp_path, server.port)
    try:
        job = wait_until(lambda: running(bin_dir / "hang-cc"), 30, "the compile to start")
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
        wait_until(lambda: alive(job) == [], 5, "the job's processes gone")
        assert server.logged("server_killing_jobs")["count"] == 1
        assert list(server_tmp.iterdir()) == []
        client.communicate(timeout=60)
        assert client.returncode != 0
    finally:
        if client.poll() is None:
            os.kill(client.pid, signal.SIGKILL)
            client.wait()


def test_a_killed_servers_job_directories_are_removed_when_the_next_one_starts(
    start_server: StartServer, server_tmp: Path
) -> None:
    """A SIGKILLed server cannot clean up: the next server in the same --tmp-dir removes
    what it left (its jobs directory says whose it was), and leaves alone the one of a
    server that still runs there."""

    def roots() -> set[Path]:
        return set(server_tmp.glob("distlb-jobs-*"))

    # (no sandbox: a SIGKILLed server's sandboxes started ahead would be left as job uids)
    running_one = start_server("--jobs", "1", "--sandbox", "none")
    (running_root,) = roots()
    killed = start_server("--jobs", "1", "--sandbox", "none")
    (killed_root,) = roots() - {running_root}
    (killed_root / "job-left-behind").mkdir()
    (killed_root / "job-left-behind" / "input.i").write_text("int left;\n")
    killed.proc.kill()
    killed.proc.wait()
    assert killed_root.exists()

    nxt = start_server("--jobs", "1", "--sandbox", "none")

    assert not killed_root.exists()
    assert running_root.exists() and len(roots()) == 2
    assert nxt.event("stale_jobs_removed") is not None
    assert running_one.proc.poll() is None
