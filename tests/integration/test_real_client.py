"""Acceptance 1: Debian's real distcc client builds through distlb-server, byte for byte."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.support.distcc import run_distcc, run_make
from tests.support.projects import local_object, sources
from tests.support.servers import Distccd, StartServer

pytestmark = pytest.mark.integration


def _assert_objects_identical(project: Path, compiler: str) -> None:
    for source in sources(project):
        remote = (project / (source.stem + ".o")).read_bytes()
        assert remote == local_object(project, source, compiler), f"{source.name} differs"


@pytest.mark.parametrize("spec", ["", ",lzo"], ids=["plain", "lzo"])
def test_multi_file_c_program_builds_identically(
    start_server: StartServer, c_project: Path, spec: str
) -> None:
    server = start_server("--jobs", "4")
    result = run_make(c_project, hosts=f"127.0.0.1:{server.port}/4{spec}", jobs=8)
    assert result.returncode == 0, result.stderr

    _assert_objects_identical(c_project, "gcc")
    run = subprocess.run([str(c_project / "prog")], capture_output=True, text=True, check=True)
    assert run.stdout.startswith("total=")
    compiled = len(sources(c_project))
    counters = server.counters()
    # Every object came from the server: none were compiled locally.
    assert counters["ok"] == compiled
    assert counters["compile_error"] == counters["rejected_busy"] == 0
    protocols = {e["protocol"] for e in server.events("job_done")}
    assert protocols == ({2} if spec else {1})


@pytest.mark.parametrize("spec", ["", ",lzo"], ids=["plain", "lzo"])
def test_cpp_program_builds_identically(
    start_server: StartServer, cpp_project: Path, spec: str
) -> None:
    server = start_server("--jobs", "2")
    result = run_make(cpp_project, hosts=f"127.0.0.1:{server.port}/2{spec}", jobs=2, compiler="g++")
    assert result.returncode == 0, result.stderr

    _assert_objects_identical(cpp_project, "g++")
    run = subprocess.run([str(cpp_project / "prog")], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "kinds=2 squares=165"
    assert server.counters()["ok"] == 2


def test_compiler_warnings_reach_the_client(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server("--jobs", "1")
    (tmp_path / "warn.c").write_text("int f(void) { int unused; return 0; }\n")
    result = run_distcc(
        ["gcc", "-Wall", "-c", "warn.c", "-o", "warn.o"],
        hosts=f"127.0.0.1:{server.port},lzo",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "unused variable" in result.stderr
    assert server.counters()["ok"] == 1


def test_job_temp_dirs_are_removed(
    start_server: StartServer, c_project: Path, server_tmp: Path
) -> None:
    server = start_server("--jobs", "2")
    result = run_make(c_project, hosts=f"127.0.0.1:{server.port}/2", jobs=4)
    assert result.returncode == 0, result.stderr
    assert server.job_dirs() == []
    assert [p.name[: len("distlb-jobs-")] for p in server_tmp.iterdir()] == ["distlb-jobs-"]


@pytest.mark.parametrize("which", ["c", "cpp"])
def test_debug_objects_match_real_distccd_byte_for_byte(
    start_server: StartServer,
    distccd: Distccd,
    c_project: Path,
    cpp_project: Path,
    which: str,
) -> None:
    project, compiler = (c_project, "gcc") if which == "c" else (cpp_project, "g++")
    server = start_server("--jobs", "2")
    cflags = "-O2 -g -Wall"
    ours = run_make(project, hosts=f"127.0.0.1:{server.port}/2,lzo", jobs=2, compiler=compiler,
                    cflags=cflags)  # fmt: skip
    assert ours.returncode == 0, ours.stderr
    objects = {s.stem: (project / (s.stem + ".o")).read_bytes() for s in sources(project)}
    for stem in objects:
        (project / (stem + ".o")).unlink()
    (project / "prog").unlink()
    theirs = run_make(project, hosts=f"127.0.0.1:{distccd.port}/2,lzo", jobs=2,
                      compiler=compiler, cflags=cflags)  # fmt: skip
    assert theirs.returncode == 0, theirs.stderr
    for stem, data in objects.items():
        assert data == (project / (stem + ".o")).read_bytes(), f"{stem}.o differs from distccd's"
    assert server.counters()["ok"] == len(objects)


def test_a_compiler_the_server_lacks_is_answered_as_distccd_answers_it(
    start_server: StartServer, tmp_path: Path
) -> None:
    """distcc's own MissingCompiler_Case (test/testdistcc.py), against real distccd
    (as that suite starts it: no compiler whitelist) and against distlb-server."""
    (tmp_path / "testtmp.i").write_text("int foo;\n")
    job = ["nosuchcc", "-c", "testtmp.i"]
    daemon = Distccd(jobs=1, extra_args=("--enable-tcp-insecure",))
    try:
        theirs = run_distcc(job, hosts=f"127.0.0.1:{daemon.port}", cwd=tmp_path)
    finally:
        daemon.stop()
    server = start_server("--jobs", "1")
    ours = run_distcc(job, hosts=f"127.0.0.1:{server.port}", cwd=tmp_path)

    assert theirs.returncode == 110, theirs.stderr
    assert ours.returncode == 110, ours.stderr
    assert re.search(r"failed to exec", theirs.stderr), theirs.stderr
    assert re.search(r"failed to exec", ours.stderr), ours.stderr
    assert not (tmp_path / "testtmp.o").exists()
