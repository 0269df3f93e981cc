"""Acceptance 2 and 3: a runaway compile is killed, whole, on its lifetime or its client's exit."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.compilers import read_pid
from tests.support.distcc import distcc_env, run_distcc
from tests.support.servers import ServerProcess, live_group_members, wait_until

pytestmark = pytest.mark.integration


def _hello(tmp: Path) -> None:
    (tmp / "hello.c").write_text("int main(void) { return 0; }\n")


def test_compile_past_its_lifetime_is_killed_and_client_gets_failure(
    start_server: type[ServerProcess],
    fake_compilers: tuple[Path, Path],
    tmp_path: Path,
    server_tmp: Path,
) -> None:
    bin_dir, markers = fake_compilers
    server = start_server(
        "--jobs", "1", "--job-lifetime", "2", "--compiler", "hang-cc", path_prepend=str(bin_dir)
    )
    _hello(tmp_path)
    result = run_distcc(
        ["hang-cc", "-c", "hello.c", "-o", "hello.o"],
        hosts=f"127.0.0.1:{server.port}",
        cwd=tmp_path,
        extra_env={"PATH": f"{bin_dir}:{os.environ['PATH']}"},
    )
    assert result.returncode != 0
    assert "job lifetime" in result.stderr
    assert not (tmp_path / "hello.o").exists()

    pgid = read_pid(markers / "pgid")
    child = read_pid(markers / "child")
    assert pgid and child, "the stand-in compiler never ran on the server"
    wait_until(lambda: not live_group_members(pgid), 5, f"process group {pgid} to be gone")
    assert not Path(f"/proc/{child}").exists() or live_group_members(pgid) == []
    assert server.counters()["timeout"] == 1
    assert server.event("compile_killing")["reason"] == "timeout"
    wait_until(lambda: list(server_tmp.iterdir()) == [], 5, "job temp dir removal")


def test_client_killed_mid_compile_kills_compiler_group_within_1s(
    start_server: type[ServerProcess],
    fake_compilers: tuple[Path, Path],
    tmp_path: Path,
    server_tmp: Path,
) -> None:
    bin_dir, markers = fake_compilers
    server = start_server("--jobs", "1", "--compiler", "hang-cc", path_prepend=str(bin_dir))
    _hello(tmp_path)
    env = distcc_env(f"127.0.0.1:{server.port}", fallback=False)
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    client = subprocess.Popen(
        ["timeout", "120", "distcc", "hang-cc", "-c", "hello.c", "-o", "hello.o"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        pgid = wait_until(lambda: read_pid(markers / "pgid"), 30, "the compile to start")
        assert live_group_members(pgid), f"compiler group should be running: {server.lines}"

        os.killpg(client.pid, signal.SIGKILL)  # the user gives up: timeout and distcc die
        killed_at = time.monotonic()
        client.wait(10)
        wait_until(lambda: not live_group_members(pgid), 1.0, "compiler group gone within 1 s")
        assert time.monotonic() - killed_at <= 1.0
    finally:
        if client.poll() is None:
            os.killpg(client.pid, signal.SIGKILL)
            client.wait()

    wait_until(lambda: server.counters()["client_disconnect"] == 1, 5, "disconnect counted")
    assert server.event("compile_killing")["reason"] == "client_disconnect"
    wait_until(lambda: list(server_tmp.iterdir()) == [], 5, "job temp dir removal")
