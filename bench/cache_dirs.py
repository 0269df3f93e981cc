"""The result cache across checkouts: a real CMake project built cold, then warm in the
same directory, then warm from another directory, through a distlb-balancer with a
Redis cache over two sandboxed distlb-servers, with the real distcc client as CMake's
compiler launcher (every file by its absolute path, as CMake builds).

Three builds of flags: Release (no debug info), RelWithDebInfo with
``-ffile-prefix-map`` for the source and build directories, and RelWithDebInfo alone
(-g, no maps: another directory finds nothing unless the balancer runs with
``--cache-share-across-dirs``, which ``--share`` adds as a fourth). Per flags: Redis
flushed, Alice configures and builds (cold), cleans and builds again (warm, same
directory), then Bob, in a deeper directory of his own, configures and builds (warm,
another directory). Only the build step is timed (ninja -j8); medians of the rounds.

    .venv/bin/python -m bench.cache_dirs [--project PATH --cmake-dir DIR --define VAR=VALUE]
                                         [--rounds R] [--share]

PATH is a git repository (its HEAD is exported) or a directory; the results in
bench/results/cache_dirs.md name the project they were measured on. Without
``--project``, a generated multi-directory C project is built (tests/support/projects.py).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.balancer_overhead import start_servers
from bench.harness import HOST, Proc, free_ports, get_json, start, start_balancer, stop, wait_ready
from tests.support.projects import write_tree_project
from tests.support.secrets import write_secret

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
FLAGS = {
    "no debug info (Release)": ("Release", False),
    "-g with -ffile-prefix-map (RelWithDebInfo)": ("RelWithDebInfo", True),
    "-g without maps (RelWithDebInfo)": ("RelWithDebInfo", False),
}


def export(project: str | None, destination: Path) -> Path:
    """A fresh copy of the project's tree at ``destination``."""
    destination.mkdir(parents=True)
    if project is None:
        shutil.rmtree(destination)
        write_tree_project(destination, libraries=6, modules=8)
        (destination / "CMakeLists.txt").write_text(
            "cmake_minimum_required(VERSION 3.13)\nproject(tree C)\n"
            "file(GLOB_RECURSE SOURCES\n"
            '  "${CMAKE_SOURCE_DIR}/src/*.c" "${CMAKE_SOURCE_DIR}/lib/*.c")\n'
            "add_executable(prog ${SOURCES})\n"
            'target_include_directories(prog PRIVATE "${CMAKE_SOURCE_DIR}/include")\n'
        )
        return destination
    is_git = (
        subprocess.run(
            ["git", "-C", project, "rev-parse", "--git-dir"], capture_output=True, check=False
        ).returncode
        == 0
    )
    if is_git:
        archive = subprocess.run(
            ["git", "-C", project, "archive", "HEAD"], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(destination)], input=archive, check=True)
    else:
        shutil.rmtree(destination)
        shutil.copytree(project, destination)
    return destination


def configure(
    tree: Path,
    args: argparse.Namespace,
    build: Path,
    build_type: str,
    maps: bool,
    env: dict[str, str],
) -> None:
    flags = f"-ffile-prefix-map={tree}=. -ffile-prefix-map={build}=." if maps else ""
    command = [
        "cmake",
        "-S",
        str(tree / args.cmake_dir),
        "-B",
        str(build),
        "-G",
        "Ninja",
        f"-DCMAKE_BUILD_TYPE={build_type}",
        "-DCMAKE_C_COMPILER_LAUNCHER=distcc",
        "-DCMAKE_CXX_COMPILER_LAUNCHER=distcc",
        f"-DCMAKE_C_FLAGS={flags}",
        f"-DCMAKE_CXX_FLAGS={flags}",
        *(f"-D{d}" for d in args.define),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"cmake failed in {build}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )


def build(build_dir: Path, env: dict[str, str]) -> float:
    started = time.monotonic()
    result = subprocess.run(
        ["timeout", "900", "ninja", "-j8"],
        cwd=build_dir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"build failed in {build_dir}:\n{result.stdout[-3000:]}")
    return time.monotonic() - started


def objects(build_dir: Path) -> int:
    listed = subprocess.run(
        ["ninja", "-t", "commands"], cwd=build_dir, capture_output=True, text=True, check=True
    ).stdout
    return sum(1 for line in listed.splitlines() if " -c " in line)


def client_env(work: Path, port: int) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(work),
        "DISTCC_FALLBACK": "0",
        "DISTCC_DIR": tempfile.mkdtemp(prefix="dd-", dir=work),
        "DISTCC_HOSTS": f"{HOST}:{port}/8,lzo",
    }


def cache_counts(admin_port: int) -> dict[str, int]:
    cache = get_json(admin_port, "/status")["cache"]
    assert isinstance(cache, dict)
    return {k: int(cache[k]) for k in ("hits", "misses", "path_misses", "stored")}


def wait_stored(admin_port: int, count: int) -> None:
    deadline = time.monotonic() + 60
    while cache_counts(admin_port)["stored"] < count and time.monotonic() < deadline:
        time.sleep(0.1)


def one_round(
    args: argparse.Namespace, work: Path, redis_port: int, balancer: tuple[int, int], flags: str
) -> dict[str, float | int]:
    build_type, maps = FLAGS.get(flags, ("RelWithDebInfo", False))
    subprocess.run(
        ["redis-cli", "-p", str(redis_port), "FLUSHALL"], check=True, capture_output=True
    )
    port, admin = balancer
    env = client_env(work, port)
    alice = export(args.project, work / "alice" / "tree")
    alice_build = work / "alice" / "build"
    configure(alice, args, alice_build, build_type, maps, env)
    jobs = objects(alice_build)
    before = cache_counts(admin)
    cold = build(alice_build, env)
    wait_stored(admin, before["stored"] + jobs)
    subprocess.run(["ninja", "-t", "clean"], cwd=alice_build, capture_output=True, check=True)
    mid = cache_counts(admin)
    same = build(alice_build, env)
    after_same = cache_counts(admin)
    bob = export(args.project, work / "bob" / "deeper" / "checkout" / "tree")
    bob_build = work / "bob" / "deeper" / "checkout" / "build"
    configure(bob, args, bob_build, build_type, maps, env)
    other = build(bob_build, env)
    after_other = cache_counts(admin)
    shutil.rmtree(work / "alice")
    shutil.rmtree(work / "bob")
    return {
        "jobs": jobs,
        "cold_s": cold,
        "same_s": same,
        "other_s": other,
        "same_hits": after_same["hits"] - mid["hits"],
        "other_hits": after_other["hits"] - after_same["hits"],
        "other_path_misses": after_other["path_misses"] - after_same["path_misses"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cache_dirs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--project", help="a CMake project (git repository or directory)")
    parser.add_argument("--cmake-dir", default=".", help="its CMakeLists.txt's directory")
    parser.add_argument(
        "--define",
        action="append",
        default=[],
        metavar="VAR=VALUE",
        help="a CMake cache entry (-D), repeatable",
    )
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--share",
        action="store_true",
        help="also -g without maps, on a --cache-share-across-dirs balancer",
    )
    args = parser.parse_args()
    for tool in ("redis-server", "cmake", "ninja", "distcc"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed (scripts/bootstrap.sh installs it)")
    work = Path(tempfile.mkdtemp(prefix="distlb-bench-dirs-"))
    work.chmod(0o755)
    procs: list[Proc] = []
    began = time.monotonic()
    results: dict[str, list[dict[str, float | int]]] = {}
    try:
        (redis_port,) = free_ports(1)
        redis = start(
            "redis",
            [
                "redis-server",
                "--port",
                str(redis_port),
                "--bind",
                HOST,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(work),
            ],
            work,
            procs,
        )
        wait_ready(redis, redis_port)
        servers = start_servers(work, procs)
        cache = (
            "--cache-redis",
            f"redis://{HOST}:{redis_port}/0",
            "--cache-timeout",
            "2",
            "--cache-secret-file",
            str(write_secret(work / "cache-secret")),
        )
        plain = start_balancer(work, servers, procs, "balancer", cache)
        runs = [(name, (plain.port, plain.admin_port)) for name in FLAGS]
        if args.share:
            shared = start_balancer(
                work, servers, procs, "balancer-share", (*cache, "--cache-share-across-dirs")
            )
            runs.append(
                ("-g without maps, --cache-share-across-dirs", (shared.port, shared.admin_port))
            )
        for name, balancer in runs:
            for _ in range(args.rounds):
                results.setdefault(name, []).append(
                    one_round(args, work, redis_port, balancer, name)
                )
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(work, ignore_errors=True)
    table = report(results)
    project = args.project or "the generated tree project (tests/support/projects.py)"
    defines = " ".join(f"-D{d}" for d in args.define)
    note = (
        f"Project: {project} ({args.cmake_dir} {defines}); {args.rounds} round(s); "
        "the build step "
        f"only (ninja -j8), through the real distcc client. Took "
        f"{time.monotonic() - began:.0f} s."
    )
    print(table)
    print(note)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "cache_dirs.md").write_text(
        f"# Result cache across checkouts\n\n{table}\n\n{note}\n"
    )
    (RESULTS_DIR / "cache_dirs.json").write_text(json.dumps(results, indent=1))
    return 0


def report(results: dict[str, list[dict[str, float | int]]]) -> str:
    rows = [
        "| flags | objects | cold s | warm, same dir: s (warm/cold), hits "
        "| warm, another dir: s (warm/cold), hits, path misses |",
        "|---|---:|---:|---|---|",
    ]
    for name, rounds in results.items():

        def median(key: str, of: list[dict[str, float | int]] = rounds) -> float:
            return float(statistics.median(float(r[key]) for r in of))

        cold, same, other = median("cold_s"), median("same_s"), median("other_s")
        jobs = int(median("jobs"))
        rows.append(
            f"| {name} | {jobs} | {cold:.1f} | {same:.1f} ({same / cold:.2f}), "
            f"{median('same_hits'):.0f}/{jobs} | {other:.1f} ({other / cold:.2f}), "
            f"{median('other_hits'):.0f}/{jobs}, {median('other_path_misses'):.0f} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
