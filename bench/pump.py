"""Pump mode (issue 29): distlb-server's pump against Debian's distccd pump, and pump
against plain mode through the balancer, in one run, driven by the real pump client.

A generated C project (bench/server_vs_distccd.py's) is built in pump mode (one
include server for the whole run, started with ``pump --startup``: the ``pump`` wrapper's
own start and stop, about a second, are not the servers') through: Debian's distccd
(the reference: its own pump support), distlb-server directly, and distlb-balancer in
front of that distlb-server; and with plain distcc (``,lzo``: the client preprocesses)
through the same balancer; and through a second balancer with a Redis cache, each of
pump and plain cold (Redis emptied) then warm (the same tree again: every file a hit; a
pump hit needs no preprocessing on the client). Rounds alternate the order; every
build's objects must equal the first's. Prints medians, the paired
ratios per round and their spread, and writes them to bench/results/pump.md.

Needs the pump client the test bootstrap builds (scripts/build-pump-client.sh).
``DISTLB_BENCH_KEEP=1`` keeps the run's directory (the daemons' logs) for a look after.

    .venv/bin/python -m bench.pump [--jobs N] [--rounds R] [--files F]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.harness import Proc, free_ports, get_json, start, stop_all, wait_ready
from bench.server_vs_distccd import (
    CLIENT_TIMEOUT_S,
    DISTLB_SERVER,
    RESULTS_DIR,
    check_objects,
    start_servers,
    timed,
    write_project,
)
from tests.support.secrets import write_secret

DISTLB_BALANCER = DISTLB_SERVER.with_name("distlb-balancer")
GOAL_RATIO = 1.10
PHASE_LIMIT_S = 1800.0


def pump_bin() -> Path:
    cache = Path(os.environ.get("DISTLB_TEST_CACHE", "/var/cache/distlb-test"))
    try:
        prefix = Path((cache / "pump-current").read_text().strip())
    except OSError as exc:
        raise SystemExit(f"no pump client built ({exc}): run scripts/bootstrap.sh test") from exc
    if not (prefix / ".distlb-built").is_file():
        raise SystemExit(f"{prefix} is not a finished build: run scripts/bootstrap.sh test")
    return prefix / "bin"


def start_balancer(
    work: Path, backend_port: int, stats_port: int, procs: list[Proc], *extra: str
) -> tuple[int, int]:
    """A balancer in front of the distlb-server (``extra``: more flags): its port and
    its admin port."""
    port, admin = free_ports(2)
    command = [str(DISTLB_BALANCER), "--listen", "127.0.0.1", "--port", str(port),
               "--admin-port", str(admin), "--log-format", "json", "--log-level", "warning",
               "--backend", f"127.0.0.1:{backend_port},status={stats_port}", *extra]  # fmt: skip
    proc = start(f"balancer{'-cached' if extra else ''}", command, work, procs)
    wait_ready(proc, port)
    wait_ready(proc, admin)
    deadline = time.monotonic() + 60
    while True:
        totals = get_json(admin, "/status")["totals"]
        if isinstance(totals, dict) and totals["healthy_backends"] >= 1:
            return port, admin
        if time.monotonic() > deadline:
            raise RuntimeError("the balancer's backend never became healthy")
        time.sleep(0.2)


def start_include_server(bin_dir: Path, env: dict[str, str], work: Path) -> dict[str, str]:
    """``pump --startup``: the include server's variables (its pid, directory, socket)."""
    done = subprocess.run(
        [str(bin_dir / "pump"), "--startup"], env={**env, "DISTCC_HOSTS": "127.0.0.1:1/1,cpp,lzo"},
        capture_output=True, text=True, timeout=60, check=True, cwd=work,
    )  # fmt: skip
    found = dict(re.findall(r"^export (INCLUDE_SERVER_\w+)='([^']*)'$", done.stdout, re.M))
    if set(found) != {"INCLUDE_SERVER_PID", "INCLUDE_SERVER_DIR", "INCLUDE_SERVER_PORT"}:
        raise RuntimeError(f"pump --startup said: {done.stdout}{done.stderr}")
    return found


def stop_include_server(bin_dir: Path, env: dict[str, str]) -> None:
    subprocess.run([str(bin_dir / "pump"), "--shutdown"], env=env, capture_output=True,
                   timeout=60, check=False)  # fmt: skip


def run(jobs: int, rounds: int, files: int) -> dict[str, list[float]]:
    bin_dir = pump_bin()
    work = Path(tempfile.mkdtemp(prefix="distlb-bench-pump-"))
    work.chmod(0o755)
    servers: dict[str, tuple[Proc, int]] = {}
    procs: list[Proc] = []
    shutdown: list[Callable[[], None]] = []
    try:
        project = work / "project"
        stems = write_project(project, files)
        start_servers(work, jobs, servers)
        args = [str(arg) for arg in servers["distlb"][0].popen.args]  # type: ignore[union-attr]
        stats_port = int(args[args.index("--stats-port") + 1])
        balancer, _ = start_balancer(work, servers["distlb"][1], stats_port, procs)
        (redis_port,) = free_ports(1)
        redis = start("redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no", "--dir", str(work)],
                      work, procs)  # fmt: skip
        wait_ready(redis, redis_port)
        cached, cached_admin = start_balancer(
            work, servers["distlb"][1], stats_port, procs, "--cache-redis",
            f"redis://127.0.0.1:{redis_port}/0", "--cache-secret-file",
            str(write_secret(work / "cache-secret")),
        )  # fmt: skip
        targets = {
            "distccd pump": (servers["distccd"][1], ",cpp,lzo"),
            "distlb pump": (servers["distlb"][1], ",cpp,lzo"),
            "balancer pump": (balancer, ",cpp,lzo"),
            "balancer plain": (balancer, ",lzo"),
            # Through a balancer with a Redis cache: emptied before each cold build, the
            # warm one right after it (the same tree, the same object directory).
            "cached pump cold": (cached, ",cpp,lzo"),
            "cached pump warm": (cached, ",cpp,lzo"),
            "cached plain cold": (cached, ",lzo"),
            "cached plain warm": (cached, ",lzo"),
        }
        reference: dict[str, str] = {}
        base = {k: v for k, v in os.environ.items() if not k.startswith(("DISTCC_", "INCLUDE_"))}
        base["PATH"] = f"{bin_dir}:{base['PATH']}"
        include_server = start_include_server(bin_dir, base, work)
        shutdown.append(lambda: stop_include_server(bin_dir, {**base, **include_server}))

        def one_build(name: str) -> float:
            port, spec = targets[name]
            env = dict(base, **include_server) if "pump" in name else dict(base)
            env["DISTCC_DIR"] = tempfile.mkdtemp(prefix="distcc-dir-", dir=work)
            env["DISTCC_HOSTS"] = f"127.0.0.1:{port}/{jobs}{spec}"
            env["DISTCC_FALLBACK"] = "0"  # (a failure fails the bench; backoff stays default)
            if name.startswith("cached"):  # (one object directory: the key names it)
                out = project / "out-cached"
                out.mkdir()
                if name.endswith("cold"):
                    subprocess.run(["redis-cli", "-p", str(redis_port), "FLUSHALL"],
                                   check=True, capture_output=True, timeout=30)  # fmt: skip
            else:
                out = Path(tempfile.mkdtemp(prefix="out-", dir=project))
            command = ["make", "-s", f"-j{jobs}", f"OUT={out.name}",
                       f"CC=timeout {CLIENT_TIMEOUT_S} distcc gcc"]  # fmt: skip
            seconds = timed(command, project, env)
            check_objects(out, stems, reference, name)
            shutil.rmtree(out)
            if name.endswith("cold"):  # (its results are stored in the background)
                wait_stored(cached_admin, len(stems))
            return seconds

        for name in targets:  # warm-up, not counted
            one_build(name)
        walls: dict[str, list[float]] = {name: [] for name in targets}
        deadline = time.monotonic() + PHASE_LIMIT_S
        # (a cold build and its warm one stay in that order: the pair is one step)
        steps = [n for n in targets if not n.endswith("warm")]
        for index in range(rounds):
            for step in steps if index % 2 == 0 else steps[::-1]:
                for name in (step, step.replace("cold", "warm")) if "cold" in step else (step,):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"builds took longer than {PHASE_LIMIT_S} s")
                    walls[name].append(round(one_build(name), 3))
        return walls
    finally:
        for stop in shutdown:
            stop()
        stop_all(procs)
        stop_all([proc for proc, _ in servers.values()])
        if not os.environ.get("DISTLB_BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)


def wait_stored(admin: int, more: int) -> None:
    """Until the cached balancer has stored ``more`` results since the last call."""
    deadline = time.monotonic() + 60
    while True:
        cache = get_json(admin, "/status")["cache"]
        stored = int(cache["stored"]) if isinstance(cache, dict) else 0
        if stored >= _STORED[0] + more:
            _STORED[0] = stored
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the cached balancer stored {stored - _STORED[0]} of {more}")
        time.sleep(0.05)


_STORED = [0]


def ratio_line(walls: dict[str, list[float]], ours: str, theirs: str, goal: str) -> str:
    paired = [a / b for a, b in zip(walls[ours], walls[theirs], strict=True)]
    return (f"- {ours} / {theirs}: median {statistics.median(paired):.3f} (rounds "
            f"{min(paired):.3f}-{max(paired):.3f}) {goal}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--files", type=int, default=24)
    args = parser.parse_args()
    walls = run(args.jobs, args.rounds, args.files)
    lines = [
        f"# bench/pump.py: {args.files} files, -j{args.jobs}, {args.rounds} rounds",
        "",
        "| path | median s | rounds (s) |",
        "|---|---:|---|",
        *(
            f"| {name} | {statistics.median(v):.3f} | {', '.join(f'{x:.3f}' for x in v)} |"
            for name, v in walls.items()
        ),
        "",
        ratio_line(walls, "distlb pump", "distccd pump", f"(goal <= {GOAL_RATIO})"),
        ratio_line(walls, "balancer pump", "distlb pump", "(the balancer's hop)"),
        ratio_line(walls, "balancer pump", "balancer plain", "(pump vs plain, no cache)"),
        ratio_line(walls, "cached pump cold", "cached pump warm", "(goal >= 10)"),
        ratio_line(walls, "cached plain cold", "cached plain warm", "(the plain cache's)"),
        ratio_line(walls, "cached plain warm", "cached pump warm", "(a hit without cpp)"),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "pump.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
