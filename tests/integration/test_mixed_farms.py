"""Mixed farms: each job goes only where its compiler is, and one build never mixes two
compiler versions (balancer/routing/compilers.py). Real distlb-servers, real distccd, the real
distcc client with fallback off; a wrapper standing in for an upgraded gcc."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from client import ClientError, compile_remote
from tests.support.chromium import LivePage
from tests.support.distcc import distcc_env
from tests.support.servers import (
    BalancerProcess,
    Distccd,
    ServerProcess,
    StartBalancer,
    StartServer,
    role_command,
    wait_until,
)
from wire import Request

pytestmark = pytest.mark.integration

CXX = "#include <vector>\nint f{i}() {{ std::vector<int> v({i}); return (int)v.size(); }}\n"
WRAPPED_VERSION = "gcc (Wrapper 99.1-upgrade) 99.1.0"


def _spec(server: ServerProcess) -> str:
    return f"127.0.0.1:{server.port},status={server.stats_port}"


def _distcc_jobs(balancer: BalancerProcess, workdir: Path, compiler: str, count: int) -> None:
    """``count`` real distcc runs at once, fallback off: every one must compile remotely."""
    suffix = ".cpp" if "+" in compiler else ".c"
    env = distcc_env(f"127.0.0.1:{balancer.port}/{count}", fallback=False)
    runs = []
    for i in range(count):
        source = workdir / f"f{i}{suffix}"
        source.write_text(
            CXX.format(i=i) if suffix == ".cpp" else f"int f{i}(void) {{ return {i}; }}\n"
        )
        runs.append(subprocess.Popen(
            ["timeout", "120", "distcc", compiler, "-c", source.name, "-o", f"f{i}.o"],
            cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))  # fmt: skip
    failed = []
    for run in runs:
        _, stderr = run.communicate(timeout=180)
        if run.returncode != 0:
            failed.append(stderr[-400:])
    assert failed == []
    assert all((workdir / f"f{i}.o").stat().st_size > 0 for i in range(count))


def _sent(balancer: BalancerProcess, server_port: int) -> int:
    return int(balancer.backend(f"127.0.0.1:{server_port}")["sent"])


def test_cxx_jobs_never_reach_a_server_without_gxx(
    start_server: StartServer, start_balancer: StartBalancer, tmp_path: Path
) -> None:
    gcc_only = start_server("--jobs", "2", "--compiler", "gcc")
    full = start_server("--jobs", "2")
    balancer = start_balancer("--backend", _spec(gcc_only), "--backend", _spec(full),
                              "--queue-timeout", "120")  # fmt: skip
    balancer.wait_healthy(2)
    _distcc_jobs(balancer, tmp_path, "g++", 24)
    assert gcc_only.counters()["rejected_policy"] == 0
    assert _sent(balancer, gcc_only.port) == 0
    assert _sent(balancer, full.port) >= 24
    compilers = balancer.backend(f"127.0.0.1:{gcc_only.port}")["compilers"]
    assert "g++" not in compilers and compilers["gcc"]["chosen"] is True


def test_a_job_for_a_compiler_no_backend_runs_is_turned_away_at_once(
    start_server: StartServer, start_balancer: StartBalancer
) -> None:
    server = start_server("--jobs", "2", "--compiler", "gcc")
    balancer = start_balancer("--backend", _spec(server))
    balancer.wait_healthy(1)
    request = Request(1, ("clang", "-c", "x.c", "-o", "x.o"), b"int x;\n")
    with pytest.raises(ClientError):  # closed without a reply: distcc compiles locally
        asyncio.run(compile_remote("127.0.0.1", balancer.port, request, timeout_s=30))
    wait_until(lambda: balancer.totals()["no_compiler"] == 1, 10, "counted as no_compiler")
    done = balancer.logged("job_done")
    assert done["outcome"] == "no_compiler" and done["compiler"] == "clang"
    assert _sent(balancer, server.port) == 0


@pytest.fixture
def upgraded_gcc(shared_tmp: Path) -> Path:
    """A toolchain dir whose ``gcc`` reports another version (and is another binary):
    a stand-in for a server already moved to a new compiler."""
    bin_dir = shared_tmp / "upgraded" / "bin"
    bin_dir.mkdir(parents=True)
    (shared_tmp / "upgraded").chmod(0o755)
    gcc = bin_dir / "gcc"
    gcc.write_text(
        "#!/bin/sh\n"
        f'for a in "$@"; do [ "$a" = --version ] && {{ echo "{WRAPPED_VERSION}"; exit 0; }}; done\n'
        'exec /usr/bin/gcc "$@"\n'
    )
    gcc.chmod(0o755)
    # (Debian's distcc client sends gcc as its target-prefixed name: the same binary)
    (bin_dir / "x86_64-linux-gnu-gcc").symlink_to("gcc")
    bin_dir.chmod(0o755)
    return bin_dir


@pytest.mark.parametrize("mode", ["majority", "pinned", "any"])
def test_one_identity_per_compiler(
    start_server: StartServer,
    start_balancer: StartBalancer,
    upgraded_gcc: Path,
    tmp_path: Path,
    mode: str,
) -> None:
    old = [start_server("--jobs", "2", "--compiler", "gcc") for _ in range(2)]
    new = start_server("--jobs", "2", "--compiler", "gcc", path_prepend=str(upgraded_gcc))
    assert new.status()["compilers"]["gcc"]["version"] == WRAPPED_VERSION
    args = ["--compiler-identity", mode, "--queue-timeout", "120"]
    if mode == "pinned":
        args += ["--pin-compiler", "gcc=Wrapper 99.1"]
    backends = [a for s in [*old, new] for a in ("--backend", _spec(s))]
    balancer = start_balancer(*backends, *args)
    balancer.wait_healthy(3)
    _distcc_jobs(balancer, tmp_path, "gcc", 18)
    on_old = sum(_sent(balancer, s.port) for s in old)
    on_new = _sent(balancer, new.port)
    assert on_old + on_new >= 18  # (a job turned away by a busy server is sent again)
    backends_used = {e["backend"] for e in balancer.events("job_done")}
    if mode == "majority":
        assert on_new == 0 and backends_used <= {f"127.0.0.1:{s.port}" for s in old}
        shown = balancer.backend(f"127.0.0.1:{new.port}")["compilers"]["gcc"]
        assert shown["state"] == "mismatch" and "Wrapper" in shown["version"]
        page = LivePage(f"http://127.0.0.1:{balancer.stats_port}/")
        try:
            cell = f'#backends tr[data-backend="127.0.0.1:{new.port}"] td.mismatch'
            shown_cell = page.wait_for(
                f"(c => c && c.textContent)(document.querySelector('{cell}'))", 30, "the mismatch"
            )
        finally:
            page.close()
        assert shown_cell.startswith("mismatch: gcc (Wrapper 99.1-upgrade)")
        metrics = balancer.http("/metrics")
        wanted = f'distlb_backend_compiler{{backend="127.0.0.1:{new.port}",chosen="false",'
        assert wanted + 'compiler="gcc",' in metrics
    elif mode == "pinned":
        assert on_old == 0 and backends_used == {f"127.0.0.1:{new.port}"}
    else:
        assert on_old > 0 and on_new > 0


def test_a_distccd_backend_listing_gcc_never_gets_a_cxx_job(
    start_server: StartServer, start_balancer: StartBalancer, tmp_path: Path
) -> None:
    distccd = Distccd(jobs=2)
    try:
        server = start_server("--jobs", "2")
        balancer = start_balancer(
            "--backend", f"127.0.0.1:{distccd.port},kind=distccd,slots=2,compilers=gcc",
            "--backend", _spec(server), "--queue-timeout", "120",
        )  # fmt: skip
        balancer.wait_healthy(2)
        _distcc_jobs(balancer, tmp_path, "g++", 8)
        assert _sent(balancer, distccd.port) == 0
        (tmp_path / "c").mkdir()
        _distcc_jobs(balancer, tmp_path / "c", "gcc", 8)
        assert _sent(balancer, distccd.port) > 0  # (gcc jobs do go there)
        shown = balancer.backend(f"127.0.0.1:{distccd.port}")["compilers"]
        assert "gcc" in shown and not any("++" in name for name in shown)
        assert "12" in str(shown["gcc"]["version"])  # read from its probe's object
    finally:
        distccd.stop()


def test_a_backend_that_lacks_the_compiler_after_all_is_left_out_and_the_job_retried(
    start_server: StartServer,
    start_balancer: StartBalancer,
    fake_compilers: tuple[Path, Path],
) -> None:
    """A distccd that says nothing of its compilers is sent a job for one it lacks: it
    answers distcc's "no such compiler", the job goes to a server that has it, and the
    distccd gets no more jobs for it."""
    bin_dir, _ = fake_compilers
    distccd = Distccd(jobs=2)
    try:
        server = start_server("--jobs", "2", "--compiler", "whoami-cc", "--compiler", "gcc",
                              path_prepend=str(bin_dir))  # fmt: skip
        # The distccd is made to look fifty times faster, so the picker tries it first;
        # jobs go one after another until one has reached it (the first, almost always).
        balancer = start_balancer(
            "--backend", f"127.0.0.1:{distccd.port},kind=distccd,slots=8,weight=50",
            "--backend", _spec(server), "--allow-compiler", "whoami-cc",
        )  # fmt: skip
        balancer.wait_healthy(2)

        async def jobs() -> list[int]:
            replies = []
            for i in range(12):
                request = Request(1, ("whoami-cc", "-c", f"w{i}.c", "-o", f"w{i}.o"), b"int w;\n")
                reply = await compile_remote("127.0.0.1", balancer.port, request, timeout_s=60)
                replies.append(reply.status)
                if _sent(balancer, distccd.port) and len(replies) >= 6:
                    break
            return replies

        statuses = asyncio.run(jobs())
        assert statuses == [0] * len(statuses)
        assert _sent(balancer, distccd.port) == 1, "no job, or more than one, reached the distccd"
        assert _sent(balancer, server.port) == len(statuses)  # (every job ended there)
        refused = balancer.logged("attempt_no_compiler")
        assert refused["backend"] == f"127.0.0.1:{distccd.port}"
        assert "whoami-cc" not in balancer.backend(f"127.0.0.1:{distccd.port}")["compilers"]
    finally:
        distccd.stop()


def test_the_monitor_flags_a_farm_whose_servers_run_two_versions_of_a_compiler(
    start_server: StartServer, upgraded_gcc: Path
) -> None:
    old = start_server("--jobs", "1", "--compiler", "gcc")
    new = start_server("--jobs", "1", "--compiler", "gcc", path_prepend=str(upgraded_gcc))
    hosts = [f"127.0.0.1:{s.port}/1,status={s.stats_port}" for s in (old, new)]
    run = subprocess.run(
        ["timeout", "60", *role_command("monitor"), *hosts, "--probes", "1", "--format", "json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    report = json.loads(run.stdout)
    assert all(m["state"] == "ok" for m in report["machines"])
    split = report["compiler_versions_differ"]["gcc"]
    assert {tuple(machines) for machines in split.values()} == {
        (f"127.0.0.1:{old.port}",),
        (f"127.0.0.1:{new.port}",),
    }
    assert "compiler versions differ: gcc" in report["alert"]
