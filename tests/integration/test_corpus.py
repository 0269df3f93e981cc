"""Real builds are let through: a corpus of command lines from real build systems,
through the real distcc client, against real distccd, distlb-server and the balancer.

For every line: distlb compiles it remotely whenever distccd does (but for the few
docs/policy.md lists, each with its harm), and the object is byte-identical to
distccd's. A CMake + Ninja build with the compiler launcher through the balancer
compiles nothing locally.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from cache.keys import input_placeholder, key_argv
from daemon.judge import Judge, Refused
from daemon.specs import path_only_specs_check
from tests.support.corpus import (
    C_SOURCE,
    CXX_SOURCE,
    CorpusLine,
    build_corpus,
    write_trusted_specs,
)
from tests.support.distcc import CLIENT_TIMEOUT_S, distcc_env
from tests.support.pump import include_server
from tests.support.servers import (
    Distccd,
    StartBalancer,
    StartServer,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="trusted specs files must be root's"),
]


@pytest.fixture
def specs_dir(shared_tmp: Path) -> Path:
    directory = shared_tmp / "specs"
    write_trusted_specs(directory)
    return directory


@pytest.fixture
def corpus(shared_tmp: Path, specs_dir: Path) -> list[CorpusLine]:
    lines = build_corpus(shared_tmp / "corpus", specs_dir)
    for path in (shared_tmp / "corpus").rglob("*"):
        path.chmod(0o777 if path.is_dir() else 0o666)
    assert len(lines) >= 40
    return lines


def _distccd_compiles(daemon: Distccd) -> int:
    # distccd answers any connection at once and closes without reading: a request
    # sent to it turns the answer into a reset (client/status.py), so send nothing.
    chunks = []
    with socket.create_connection(("127.0.0.1", daemon.stats_port), timeout=10) as sock:
        while data := sock.recv(65536):
            chunks.append(data)
    text = b"".join(chunks).decode("latin-1")
    return sum(int(line.split()[1]) for line in text.splitlines()
               if line.split()[:1] in (["dcc_compile_ok"], ["dcc_compile_error"]))  # fmt: skip


def _compile(line: CorpusLine, hosts: str) -> tuple[bytes | None, str]:
    """Run ``line`` through the real client (fallback on); its object and stderr."""
    if line.output.exists():
        line.output.unlink()
    done = subprocess.run(
        ["timeout", str(CLIENT_TIMEOUT_S), "distcc", *line.argv()],
        cwd=line.cwd, env=distcc_env(hosts, fallback=True), capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, (line.name, line.argv(), done.stderr)
    return (line.output.read_bytes() if line.output.exists() else None), done.stderr


def _compile_locally(line: CorpusLine) -> bytes:
    if line.output.exists():
        line.output.unlink()
    subprocess.run(line.argv(), cwd=line.cwd, capture_output=True, timeout=120, check=True)
    return line.output.read_bytes()


def test_corpus_compiles_remotely_on_distlb_whenever_on_distccd_and_objects_match(
    corpus: list[CorpusLine],
    specs_dir: Path,
    start_server: StartServer,
    start_balancer: StartBalancer,
    distccd_stats: Distccd,
) -> None:
    trusted = ("--trusted-specs-dir", str(specs_dir))
    server = start_server("--jobs", "2", *trusted)
    balancer_backend = start_server("--jobs", "2", *trusted)
    balancer = start_balancer(
        "--backend", f"127.0.0.1:{balancer_backend.port},status={balancer_backend.stats_port}",
        *trusted,
    )  # fmt: skip
    balancer.wait_healthy(1)
    targets: dict[str, tuple[str, Callable[[], int]]] = {
        "distccd": (f"127.0.0.1:{distccd_stats.port}/2", lambda: _distccd_compiles(distccd_stats)),
        "distlb-server": (f"127.0.0.1:{server.port}/2", lambda: server.counters()["ok"]),
        "balancer": (f"127.0.0.1:{balancer.port}/2,lzo", lambda: balancer.totals()["ok"]),
    }
    mismatches = []
    remote_counts = dict.fromkeys(targets, 0)
    for line in corpus:
        objects: dict[str, bytes | None] = {}
        remote: dict[str, bool] = {}
        for target, (hosts, compiled) in targets.items():
            before = compiled()
            objects[target], _ = _compile(line, hosts)
            remote[target] = compiled() > before
            remote_counts[target] += remote[target]
        local, local_again = _compile_locally(line), _compile_locally(line)
        expected = remote["distccd"] and line.exception is None
        for target in ("distlb-server", "balancer"):
            if remote[target] != expected and not (remote[target] and not remote["distccd"]):
                mismatches.append(f"{line.name}: {target} remote={remote[target]}, "
                                  f"distccd remote={remote['distccd']}")  # fmt: skip
            if not (remote["distccd"] and remote[target]):
                continue
            if local != local_again:
                # Not reproducible even locally (gcc names LTO sections with a random
                # number unless -frandom-seed is given): only that an object came back.
                assert objects[target], line.name
            elif objects[target] != objects["distccd"] and not (
                objects["distccd"] != local and objects[target] == local
            ):  # distccd's own temp file name can end up in its object (-x c++): then local
                mismatches.append(f"{line.name}: {target}'s object differs from distccd's")
        if line.exception is not None:
            assert remote["distccd"], f"{line.name}: distccd no longer compiles it remotely"
    assert mismatches == [], "\n".join(mismatches)
    # Most lines go remote everywhere: the corpus is not vacuous.
    assert remote_counts["distlb-server"] >= len(corpus) - 8, remote_counts
    assert remote_counts["balancer"] == remote_counts["distlb-server"], remote_counts


def test_cache_keys_and_the_judge_agree_on_the_input_of_every_corpus_line(
    corpus: list[CorpusLine], specs_dir: Path
) -> None:
    judge = Judge(specs_check=path_only_specs_check([str(specs_dir)]))
    judged = 0
    for line in corpus:
        argv = line.argv()
        try:
            job = judge.judge(argv)
        except Refused:
            continue  # the client strips these lines' local options before sending
        judged += 1
        assert job.argv[job.input_index] == str(line.source), line.name
        named: set[int] = set()
        if job.output_index is not None:
            named |= {job.output_index - 1, job.output_index}  # "-o" and its value
        expected = [
            input_placeholder(arg) if i == job.input_index else arg
            for i, arg in enumerate(job.argv)
            if i not in named
        ]
        assert key_argv(job.argv) == expected, line.name
    assert judged >= 35


def test_cmake_ninja_build_with_the_compiler_launcher_compiles_nothing_locally(
    shared_tmp: Path,
    start_server: StartServer,
    start_balancer: StartBalancer,
) -> None:
    server = start_server("--jobs", "4")
    balancer = start_balancer("--backend", f"127.0.0.1:{server.port},status={server.stats_port}")
    balancer.wait_healthy(1)
    src = shared_tmp / "cmake-launcher"
    src.mkdir()
    names = []
    for i in range(6):
        (src / f"part{i}.c").write_text(C_SOURCE.replace("lookup", f"lookup{i}"))
        names.append(f"part{i}.c")
    (src / "widget.cc").write_text(CXX_SOURCE)
    (src / "main.c").write_text("int main(void) { return 0; }\n")
    (src / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.16)\nproject(launched C CXX)\n"
        f"add_library(parts STATIC {' '.join(names)} widget.cc)\n"
        "add_executable(app main.c)\ntarget_link_libraries(app parts)\n"
    )
    build = src / "build"
    env = distcc_env(f"127.0.0.1:{balancer.port}/8,lzo", fallback=True)
    subprocess.run(
        ["cmake", "-S", str(src), "-B", str(build), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
         "-DCMAKE_C_COMPILER_LAUNCHER=distcc", "-DCMAKE_CXX_COMPILER_LAUNCHER=distcc"],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    ok_before = balancer.totals()["ok"]
    done = subprocess.run(
        ["timeout", str(CLIENT_TIMEOUT_S), "ninja", "-C", str(build), "-j", "8"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    output = done.stdout + done.stderr
    assert "running locally" not in output, output
    assert balancer.totals()["ok"] - ok_before == len(names) + 2  # every file, remotely
    assert balancer.totals()["rejected_policy"] == 0
    assert shutil.which("ninja")


def _pump_compile(line: CorpusLine, env: dict[str, str], log: Path) -> tuple[bytes | None, str]:
    """``line`` through the real client in pump mode; its object (None if none came)
    and the client's log."""
    line.output.unlink(missing_ok=True)
    done = subprocess.run(
        ["timeout", str(CLIENT_TIMEOUT_S), "distcc", *line.argv()], cwd=line.cwd,
        env={**env, "DISTCC_VERBOSE": "1", "DISTCC_LOG": str(log)},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    said = log.read_text() if log.exists() else ""
    if done.returncode != 0 or not line.output.exists():
        return None, f"{done.stderr[-300:]} {said[-600:]}"
    return line.output.read_bytes(), said


def _objdump(obj: bytes, where: Path) -> str:
    """What an object says but the MD5 of its sources: code, relocations, debug info and
    the decoded line table (objdump's view, not the line table's raw header)."""
    where.write_bytes(obj)
    done = subprocess.run(
        ["objdump", "-d", "-r", "--dwarf=info", "--dwarf=decodedline", str(where)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return done.stdout.split("\n", 2)[2]  # (after the line that names the file)


@pytest.mark.parametrize("through", ["server", "balancer"])
def test_corpus_in_pump_mode_equals_local_compiles(
    corpus: list[CorpusLine],
    specs_dir: Path,
    start_server: StartServer,
    start_balancer: StartBalancer,
    tmp_path: Path,
    through: str,
) -> None:
    """Issue 29: every corpus line distlb takes (not the policy's exceptions) that the
    real pump client sends (it keeps a few local itself: -march=native, coverage, ...)
    goes in protocol 3 and is compiled on the server in pump mode (no refusal, no
    fallback), its object byte-identical to a local compile's; but for clang -g, where
    the client's include server prepends a #line to the source and clang then records no
    MD5 of it: there code, debug info and line table equal the local object's (real
    distccd's pump object differs more: its temporary directory, "/" padded, in paths)."""
    trusted = ("--trusted-specs-dir", str(specs_dir))
    server = start_server("--jobs", "2", *trusted)
    port = server.port
    if through == "balancer":  # (which checks and judges each as the server does)
        spec = f"127.0.0.1:{server.port},status={server.stats_port}"
        balancer = start_balancer("--backend", spec, *trusted)
        balancer.wait_healthy(1)
        port = balancer.port
    taken = [line for line in corpus if line.exception is None]
    failures, sent, md5_only = [], 0, 0
    with include_server(f"127.0.0.1:{port}/2,cpp,lzo") as env:
        for line in taken:
            local = _compile_locally(line)
            obj, said = _pump_compile(line, env, tmp_path / f"{line.name}.log")
            if "send DIST" not in said:
                continue  # (the client compiled it locally without asking: its choice)
            sent += 1
            if obj is None or "got DONE00000003" not in said or "locally instead" in said:
                failures.append(f"{line.name}: {said[-600:]}")
            elif obj == local or local != _compile_locally(line):
                continue  # (equal; or not reproducible even locally: LTO's random names)
            elif (
                line.argv()[0].startswith("clang")
                and "-g" in line.argv()
                and _objdump(obj, tmp_path / "ours.o") == _objdump(local, tmp_path / "local.o")
            ):
                md5_only += 1
            else:
                failures.append(f"{line.name}: the object differs from a local compile's")
    assert failures == [], "\n".join(failures)
    assert server.counters()["pump"] == sent >= 30 and md5_only <= 2
