"""Acceptance 2 and 3: a runaway compile is killed, whole, on its lifetime or its client's exit."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support.compilers import alive, running
from tests.support.distcc import distcc_env
from tests.support.servers import StartServer, wait_until

pytestmark = pytest.mark.integration


def _hello(tmp: Path) -> None:
    (tmp / "hello.c").write_text("int main(void) { return 0; }\n")


def test_compile_past_its_lifetime_is_killed_and_client_gets_failure(
    start_server: StartServer,
    fake_compilers: tuple[Path, Path],
    tmp_path: Path,
    server_tmp: Path,
) -> None:
    bin_dir, _ = fake_compilers
    server = start_server(
        "--jobs", "1", "--job-lifetime", "2", "--compiler", "hang-cc", path_prepend=str(bin_dir)
    )
    _hello(tmp_path)
    seen: list[int] = []
    client = subprocess.Popen(
        ["timeout", "120", "distcc", "hang-cc", "-c", "hello.c", "-o", "hello.o"], cwd=tmp_path,
        env={**distcc_env(f"127.0.0.1:{server.port}", fallback=False),
             "PATH": f"{bin_dir}:{os.environ['PATH']}"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    # The stand-in and the child it starts, seen running on the server.
    seen = wait_until(lambda: len(running(bin_dir / "hang-cc")) >= 2 and running(
        bin_dir / "hang-cc"), 30, "the stand-in and its child to run")  # fmt: skip
    _, stderr = client.communicate(timeout=60)
    assert client.returncode != 0
    assert "job lifetime" in stderr
    assert not (tmp_path / "hello.o").exists()

    wait_until(lambda: alive(seen) == [], 5, f"every process of the job ({seen}) to be gone")
    assert server.counters()["timeout"] == 1
    assert server.logged("compile_killing")["reason"] == "timeout"
    wait_until(lambda: server.job_dirs() == [], 5, "job temp dir removal")


def test_client_killed_mid_compile_kills_compiler_group_within_1s(
    start_server: StartServer,
    fake_compilers: tuple[Path, Path],
    tmp_path: Path,
    server_tmp: Path,
) -> None:
    bin_dir, _ = fake_compilers
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
        job = wait_until(lambda: len(running(bin_dir / "hang-cc")) >= 2 and running(
            bin_dir / "hang-cc"), 30, "the compile to start")  # fmt: skip

        os.killpg(client.pid, signal.SIGKILL)  # the user gives up: timeout and distcc die
        client.wait(10)
        wait_until(lambda: alive(job) == [], 1.0, "every process of the job gone within 1 s")
    finally:
        if client.poll() is None:
            os.killpg(client.pid, signal.SIGKILL)
            client.wait()

    wait_until(lambda: server.counters()["client_disconnect"] == 1, 5, "disconnect counted")
    assert server.logged("compile_killing")["reason"] == "client_disconnect"
    wait_until(lambda: server.job_dirs() == [], 5, "job temp dir removal")
