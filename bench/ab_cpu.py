"""The balancer's CPU per job: this tree against an earlier commit, in one run.

Changes that take a few percent off the balancer's cost per job are smaller than the
noise between runs on a shared machine, so they are measured A/B: the earlier commit
is checked out in a temporary git worktree, and rounds alternate between it and this
tree over the same instant backends (bench/instant_backends.py,
InstantBackendForBench), each round a fresh balancer and one distlb-loadgen run. The
balancer's CPU (user + system, from /proc) over the load, per job answered; medians
and every round are printed, and HAProxy's over the same load when asked.

    .venv/bin/python -m bench.ab_cpu --base COMMIT [--rounds 6] [--jobs 3000]
        [--size tiny|100kb] [--clients 64] [--backends 2] [--haproxy]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import harness
from bench.harness import HOST, Proc, free_ports, start, stop_all, wait_ready
from bench.scale import (
    BIN,
    HAPROXY,
    ROOT,
    SIZE_KB,
    load,
    start_instant_backends,
    write_balancer_config,
    write_haproxy_config,
)

LOAD_CAP_S = 60.0
"""No load phase runs longer (its jobs are then fewer than asked: the rate is printed)."""


def _round(
    tree: Path, config: Path, backends: int, work: Path, args: argparse.Namespace, name: str
) -> tuple[float, float]:
    """One balancer from ``tree`` under one load: (CPU ms per job, jobs per second)."""
    procs: list[Proc] = []
    port, admin = free_ports(2)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    try:
        balancer = start(name, [str(BIN / "distlb-balancer"), "--config", str(config),
                                "--listen", HOST, "--port", str(port), "--admin-port", str(admin),
                                "--log-format", "json", "--log-level", "warning",
                                "--queue-timeout", "30"], work, procs, env)  # fmt: skip
        wait_ready(balancer, port)
        wait_ready(balancer, admin)
        harness.wait_healthy(admin, backends, 60)
        before = harness.cpu_s(balancer.popen.pid)
        summary = load(port, args.jobs, args.clients, args.size, LOAD_CAP_S)
        used = harness.cpu_s(balancer.popen.pid) - before
    finally:
        stop_all(procs)
    return used * 1000 / max(1, summary["ok"]), float(summary["jobs_per_s"])


def _haproxy(ports: list[int], work: Path, args: argparse.Namespace) -> float:
    procs: list[Proc] = []
    (port,) = free_ports(1)
    cfg = write_haproxy_config(work / "haproxy.cfg", ports, port)
    try:
        proxy = start("haproxy", [HAPROXY, "-db", "-f", str(cfg)], work, procs)
        wait_ready(proxy, port)
        before = harness.cpu_s(proxy.popen.pid)
        summary = load(port, args.jobs, args.clients, args.size, LOAD_CAP_S)
        used = harness.cpu_s(proxy.popen.pid) - before
    finally:
        stop_all(procs)
    return used * 1000 / max(1, summary["ok"])


def _spread(values: list[float]) -> str:
    return (f"median {statistics.median(values):.3f} (rounds "
            f"{', '.join(f'{v:.3f}' for v in values)})")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the commit to compare with")
    parser.add_argument("--rounds", type=int, default=6, help="rounds of each tree")
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--size", choices=sorted(SIZE_KB), default="tiny")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--backends", type=int, default=2)
    parser.add_argument("--haproxy", action="store_true", help="HAProxy over the same load too")
    args = parser.parse_args()
    if not 1 <= args.rounds <= 50 or not 1 <= args.jobs <= 100_000:
        parser.error("--rounds 1..50 and --jobs 1..100000")
    base = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.base],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    changed = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "-uno"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    head += " with uncommitted changes" if changed else ""
    with tempfile.TemporaryDirectory(prefix="distlb-ab-") as tmp:
        work = Path(tmp)
        base_tree = work / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q",
                        str(base_tree), base], check=True)  # fmt: skip
        procs: list[Proc] = []
        cpu: dict[str, list[float]] = {"base": [], "this": []}
        rate: dict[str, list[float]] = {"base": [], "this": []}
        haproxy: list[float] = []
        try:
            _, ports = start_instant_backends(work, "fakes", args.backends, procs)
            config = write_balancer_config(work / "balancer.toml", ports)
            for i in range(args.rounds):
                order = ("base", "this") if i % 2 == 0 else ("this", "base")
                for which in order:
                    tree = base_tree if which == "base" else ROOT
                    ms, per_s = _round(tree, config, args.backends, work, args, f"{which}-{i}")
                    cpu[which].append(ms)
                    rate[which].append(per_s)
                    print(f"round {i} {which:4}: {ms:.3f} ms/job, {per_s:.0f} jobs/s", flush=True)
                if args.haproxy:
                    haproxy.append(_haproxy([p for p, _ in ports], work, args))
        finally:
            stop_all(procs)
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(base_tree)], check=False)  # fmt: skip
    print(f"balancer CPU ms per job, {args.jobs} {args.size} jobs at {args.clients} clients, "
          f"{args.backends} instant backends, {args.rounds} rounds each, alternating:")  # fmt: skip
    print(f"- base {base}: {_spread(cpu['base'])}")
    print(f"- this {head}: {_spread(cpu['this'])}")
    ratio = statistics.median(cpu["this"]) / statistics.median(cpu["base"])
    print(f"- this / base: {ratio:.3f}; jobs/s medians {statistics.median(rate['base']):.0f} "
          f"-> {statistics.median(rate['this']):.0f}")  # fmt: skip
    if haproxy:
        print(f"- HAProxy leastconn: {_spread(haproxy)}; this / HAProxy "
              f"{statistics.median(cpu['this']) / statistics.median(haproxy):.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
