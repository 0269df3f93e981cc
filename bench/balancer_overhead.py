"""What distlb-balancer adds to a job, next to HAProxy and to no balancer at all.

Two distlb-servers take one-line compiles from the asyncio client library along three
paths: straight to the servers (round-robin), through distlb-balancer, and through
HAProxy (``mode tcp``, ``balance leastconn``, ``maxconn`` = slots). Each repetition
runs every path at concurrency 1 (latency) and 64 (throughput), in alternating path
order. Prints a table of medians and ratios and writes it, with the raw per-phase
numbers, to bench/results/.

    .venv/bin/python -m bench.balancer_overhead [--rounds R] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

from bench.harness import (
    HOST,
    Balancer,
    Proc,
    free_ports,
    get_json,
    log_events,
    quantile_ms,
    start,
    start_balancer,
    start_haproxy,
    stop,
    wait_ready,
)
from client import ClientError, TurnedAway, compile_remote
from wire import Request

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
DISTLB_SERVER = ROOT / ".venv" / "bin" / "distlb-server"
PATHS = ("direct", "balancer", "haproxy")
SERVERS = 2
SLOTS = 8  # --jobs of each server, and HAProxy's maxconn per server
LOW, HIGH = 1, 64  # the two concurrencies
GOAL_ADDED_P50_MS = 1.0
GOAL_THROUGHPUT_RATIO = 0.9
JOB_TIMEOUT_S = 30.0  # one compile_remote call
RETRY_BACKOFF_S = 0.01  # before retrying a turned-away job, jittered by +-50%
MAX_RETRIES = 300  # per job; then it counts as failed
WARMUP_JOBS = 10  # at concurrency 1, per path and round, not counted
SOURCE = b"int one(int x) { return x + 1; }\n"
REQUEST = Request(1, ("gcc", "-c", "t.c", "-o", "t.o"), SOURCE)

HAPROXY_CFG = """global
    maxconn 4096

defaults
    mode tcp
    timeout connect 1s
    timeout client 60s
    timeout server 60s

frontend distcc
    bind {host}:{port}
    default_backend distlb

backend distlb
    balance leastconn
{servers}
"""


def notable(log_path: Path) -> dict[str, int]:
    """Log lines above info, and non-ok job outcomes, counted by name."""
    counts: Counter[str] = Counter()
    for event in log_events(log_path):
        name, level = str(event.get("event")), str(event.get("level"))
        if name == "job_done" and event.get("outcome") != "ok":
            counts[f"job_done:{event.get('outcome')}"] += 1
        elif level not in ("debug", "info"):
            counts[f"{level}:{name}"] += 1
    return dict(counts)


@dataclass(frozen=True)
class Server:
    proc: Proc
    port: int
    stats_port: int


def start_servers(work: Path, procs: list[Proc]) -> list[Server]:
    """distlb-servers on pre-chosen free ports: at ``--log-level warning`` they do not
    log ``server_ready``, so readiness is a TCP connect."""
    servers = []
    for index in range(SERVERS):
        port, stats_port = free_ports(2)
        tmp = work / f"server{index}-tmp"
        tmp.mkdir()
        tmp.chmod(0o755)  # as root, compilers run unprivileged and must reach job dirs
        command = [str(DISTLB_SERVER), "--listen", HOST, "--port", str(port)]
        command += ["--stats-port", str(stats_port), "--jobs", str(SLOTS), "--offer-by-load", "off"]
        command += ["--log-format", "json", "--log-level", "warning", "--tmp-dir", str(tmp)]
        servers.append(Server(start(f"server{index}", command, work, procs), port, stats_port))
    for server in servers:
        wait_ready(server.proc, server.port)
        wait_ready(server.proc, server.stats_port)
    return servers


class Phase(TypedDict):
    path: str
    concurrency: int
    jobs: int
    ok: int
    failed: int
    turned_away: int
    retries: int
    errors: dict[str, int]
    capped: bool
    wall_s: float
    jobs_per_s: float
    p50_ms: float
    p99_ms: float
    server_rejected_busy: int
    server_busy_max: int


@dataclass
class Load:
    """What the clients of one phase saw; shared by its workers (one event loop)."""

    issued: int = 0
    ok: int = 0
    failed: int = 0
    turned_away: int = 0
    retries: int = 0
    capped: bool = False
    errors: Counter[str] = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)


async def one_job(target: tuple[str, int], load: Load, deadline: float, rng: random.Random) -> None:
    """Send one job until it is compiled, retrying turn-aways (bounded); count the end."""
    started = time.monotonic()
    for attempt in range(MAX_RETRIES + 1):
        if attempt:
            load.retries += 1
            await asyncio.sleep(RETRY_BACKOFF_S * rng.uniform(0.5, 1.5))
        try:
            reply = await compile_remote(*target, REQUEST, timeout_s=JOB_TIMEOUT_S)
        except TurnedAway:
            load.turned_away += 1
            if time.monotonic() > deadline:
                load.capped = True
                load.errors["turned away past the cap"] += 1
                break
            continue
        except ClientError as exc:
            load.errors[type(exc).__name__] += 1
            break
        if reply.ok and reply.obj.startswith(b"\x7fELF"):
            load.ok += 1
            load.latencies_s.append(time.monotonic() - started)
        else:
            load.errors[f"compile status {reply.status}: {reply.stderr[:80]!r}"] += 1
            load.failed += 1
        return
    else:
        load.errors["too many turn-aways"] += 1
    load.failed += 1


async def drive(targets: list[tuple[str, int]], concurrency: int, jobs: int, cap_s: float) -> Load:
    """``concurrency`` clients share ``jobs`` jobs; job k goes to ``targets[k % len]``.
    No new job starts after ``cap_s``."""
    load = Load()
    deadline = time.monotonic() + cap_s
    rng = random.Random(concurrency)  # backoff jitter only

    async def client() -> None:
        while load.issued < jobs:
            if time.monotonic() > deadline:
                load.capped = True
                return
            target = targets[load.issued % len(targets)]
            load.issued += 1
            await one_job(target, load, deadline, rng)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return load


def server_counters(servers: list[Server]) -> tuple[int, int]:
    """(rejected_busy summed, busy_max highest) over the servers, from /status."""
    rejected, busy_max = 0, 0
    for server in servers:
        status = get_json(server.stats_port, "/status")
        counters = status["counters"]
        assert isinstance(counters, dict)
        rejected += int(counters["rejected_busy"])
        busy_max = max(busy_max, int(str(status["busy_max"])))
    return rejected, busy_max


def run_phase(
    path: str,
    targets: list[tuple[str, int]],
    concurrency: int,
    jobs: int,
    cap_s: float,
    servers: list[Server],
) -> Phase:
    rejected_before, _ = server_counters(servers)
    started = time.monotonic()
    load = asyncio.run(drive(targets, concurrency, jobs, cap_s))
    wall_s = time.monotonic() - started
    rejected_after, busy_max = server_counters(servers)
    return Phase(
        path=path,
        concurrency=concurrency,
        jobs=jobs,
        ok=load.ok,
        failed=load.failed,
        turned_away=load.turned_away,
        retries=load.retries,
        errors=dict(load.errors),
        capped=load.capped,
        wall_s=round(wall_s, 3),
        jobs_per_s=round(load.ok / wall_s, 2),
        p50_ms=quantile_ms(load.latencies_s, 0.50, 3),
        p99_ms=quantile_ms(load.latencies_s, 0.99, 3),
        server_rejected_busy=rejected_after - rejected_before,
        server_busy_max=busy_max,
    )


class Raw(TypedDict):
    rounds: int
    jobs: dict[str, int]
    cap_s: float
    phases: list[Phase]
    balancer_totals: list[dict[str, object]]
    logs: dict[str, dict[str, int]]


def run(rounds: int, jobs_low: int, jobs_high: int, cap_s: float, keep_logs: Path | None) -> Raw:
    work = Path(tempfile.mkdtemp(prefix="distlb-bench-"))
    work.chmod(0o755)  # the unprivileged compile user must reach the job dirs inside
    procs: list[Proc] = []
    phases: list[Phase] = []
    balancer_totals: list[dict[str, object]] = []
    try:
        servers = start_servers(work, procs)
        lines = [f"    server s{i} {HOST}:{s.port} maxconn {SLOTS}" for i, s in enumerate(servers)]
        haproxy_port = start_haproxy(work, procs, "haproxy", HAPROXY_CFG, lines)
        direct = [(HOST, s.port) for s in servers]
        for round_index in range(rounds):
            order = PATHS if round_index % 2 == 0 else PATHS[::-1]
            for path in order:
                balancer: Balancer | None = None
                # The balancer runs only in its own turn: its health probes are compiles
                # that would otherwise take slots from the other paths.
                if path == "balancer":
                    balancer = start_balancer(work, servers, procs, f"balancer{round_index}")
                    targets = [(HOST, balancer.port)]
                elif path == "haproxy":
                    targets = [(HOST, haproxy_port)]
                else:
                    targets = direct
                try:
                    asyncio.run(drive(targets, 1, WARMUP_JOBS, cap_s))
                    for concurrency, jobs in ((LOW, jobs_low), (HIGH, jobs_high)):
                        phase = run_phase(path, targets, concurrency, jobs, cap_s, servers)
                        phases.append(phase)
                        print(
                            f"round {round_index} {path:>8} c={concurrency:<2} "
                            f"ok={phase['ok']} p50={phase['p50_ms']:.1f} ms "
                            f"{phase['jobs_per_s']:.1f} jobs/s "
                            f"turned_away={phase['turned_away']} failed={phase['failed']} "
                            f"server_rejected={phase['server_rejected_busy']}",
                            file=sys.stderr,
                        )
                    if balancer is not None:
                        totals = get_json(balancer.admin_port, "/status")["totals"]
                        assert isinstance(totals, dict)
                        balancer_totals.append(totals)
                finally:
                    if balancer is not None:
                        stop(balancer.proc)
        for proc in procs:
            stop(proc)  # now, so that their logs are complete
        return Raw(
            rounds=rounds,
            jobs={str(LOW): jobs_low, str(HIGH): jobs_high},
            cap_s=cap_s,
            phases=phases,
            balancer_totals=balancer_totals,
            logs={proc.name: notable(proc.log_path) for proc in procs},
        )
    finally:
        for proc in procs:
            stop(proc)
        if keep_logs is not None:
            keep_logs.mkdir(parents=True, exist_ok=True)
            for kept in [*work.glob("*.log"), *work.glob("*.cfg")]:
                shutil.copy(kept, keep_logs)
        shutil.rmtree(work, ignore_errors=True)


def phases_of(raw: Raw, path: str, concurrency: int) -> list[Phase]:
    """One path's phases at one concurrency, in round order."""
    return [p for p in raw["phases"] if p["path"] == path and p["concurrency"] == concurrency]


def paired(
    raw: Raw, concurrency: int, path: str, value: Callable[[Phase], float]
) -> list[tuple[float, float]]:
    """(this path's value, direct's value) per round."""
    mine = [value(p) for p in phases_of(raw, path, concurrency)]
    base = [value(p) for p in phases_of(raw, "direct", concurrency)]
    return list(zip(mine, base, strict=True))


def summarize(raw: Raw) -> list[dict[str, str | float | int]]:
    rows: list[dict[str, str | float | int]] = []
    for path in PATHS:
        p50 = paired(raw, LOW, path, lambda p: p["p50_ms"])
        p99 = paired(raw, LOW, path, lambda p: p["p99_ms"])
        rate = paired(raw, HIGH, path, lambda p: p["jobs_per_s"])
        mine = [p for p in raw["phases"] if p["path"] == path]
        rows.append(
            {
                "path": path,
                "p50_ms": round(statistics.median(m for m, _ in p50), 2),
                "p99_ms": round(statistics.median(m for m, _ in p99), 2),
                "added_p50_ms": round(statistics.median(m - d for m, d in p50), 2),
                "added_p99_ms": round(statistics.median(m - d for m, d in p99), 2),
                "jobs_per_s": round(statistics.median(m for m, _ in rate), 1),
                "ratio": round(statistics.median(m / d for m, d in rate), 3),
                "turned_away": sum(p["turned_away"] for p in mine),
                "retries": sum(p["retries"] for p in mine),
                "failed": sum(p["failed"] for p in mine),
                "servers_rejected": sum(p["server_rejected_busy"] for p in mine),
                "capped": int(any(p["capped"] for p in mine)),
            }
        )
    return rows


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def table(raw: Raw, rows: list[dict[str, str | float | int]]) -> str:
    lines = [
        f"| path | c={LOW} p50 ms | c={LOW} p99 ms | added p50 ms | added p99 ms "
        f"| c={HIGH} jobs/s | vs direct | turned away / retries / failed | servers rejected |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['path']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['added_p50_ms']:+.2f} "
            f"| {r['added_p99_ms']:+.2f} | {r['jobs_per_s']:.1f} | {r['ratio']:.3f} "
            f"| {r['turned_away']} / {r['retries']} / {r['failed']} | {r['servers_rejected']} |"
        )
    by_path = {str(r["path"]): r for r in rows}
    lines.append("")
    for path in ("balancer", "haproxy"):
        r = by_path[path]
        added, ratio = float(r["added_p50_ms"]), float(r["ratio"])
        lines.append(
            f"- {path}: p50 added <= {GOAL_ADDED_P50_MS:.0f} ms: "
            f"{verdict(added <= GOAL_ADDED_P50_MS)} ({added:+.2f}); "
            f"c={HIGH} throughput >= {GOAL_THROUGHPUT_RATIO} x direct: "
            f"{verdict(ratio >= GOAL_THROUGHPUT_RATIO)} ({ratio:.3f})"
        )
    capped = [str(r["path"]) for r in rows if r["capped"]]
    drift = [p["p50_ms"] for p in phases_of(raw, "direct", LOW)]
    lines.append("")
    lines.append(
        f"{SERVERS} distlb-servers x {SLOTS} slots; one-line C, protocol 1; R={raw['rounds']} "
        f"rounds of {raw['jobs'][str(LOW)]} jobs at c={LOW} and {raw['jobs'][str(HIGH)]} at "
        f"c={HIGH} per path, path order alternating; medians over rounds, added and vs direct "
        f"paired within a round. Turned away (by what the client talked to) / client retries "
        f"(after ~{RETRY_BACKOFF_S * 1000:.0f} ms) / failed, and servers rejected (busy "
        f"turn-aways the servers counted, balancer probes included): sums over all rounds and "
        f"both concurrencies. Noise: direct c={LOW} p50 ranged {min(drift):.1f} to "
        f"{max(drift):.1f} ms across rounds."
        + (f" CAPPED at {raw['cap_s']} s: {capped}." if capped else "")
    )
    return "\n".join(lines)


def write_results(
    raw: Raw, rows: list[dict[str, str | float | int]], text: str, took_s: float
) -> None:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    document = {
        "rows": rows,
        "goals": {"added_p50_ms": GOAL_ADDED_P50_MS, "throughput_ratio": GOAL_THROUGHPUT_RATIO},
        "took_s": took_s,
        "raw": raw,
    }
    (RESULTS_DIR / "balancer_overhead.json").write_text(json.dumps(document, indent=1) + "\n")
    raw_lines = []
    for path in PATHS:
        for concurrency in (LOW, HIGH):
            mine = phases_of(raw, path, concurrency)
            raw_lines.append(
                f"- {path} c={concurrency}: p50 ms {[p['p50_ms'] for p in mine]}, "
                f"p99 ms {[p['p99_ms'] for p in mine]}, jobs/s {[p['jobs_per_s'] for p in mine]}, "
                f"server rejected busy {[p['server_rejected_busy'] for p in mine]}"
            )
    raw_lines += [f"- log {name}: {counts}" for name, counts in raw["logs"].items() if counts]
    markdown = f"# distlb-balancer overhead\n\n{text}\n\nTook {took_s} s.\n\n## Raw\n\n"
    (RESULTS_DIR / "balancer_overhead.md").write_text(markdown + "\n".join(raw_lines) + "\n")


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    # SIGTERM unwinds like Ctrl-C, through the finally blocks that stop what we started.
    signal.signal(signal.SIGTERM, _interrupt)
    parser = argparse.ArgumentParser(
        prog="python -m bench.balancer_overhead", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--rounds", type=int, default=5, help="R: repetitions of every phase")
    parser.add_argument("--jobs-low", type=int, default=200, help=f"jobs per phase at c={LOW}")
    parser.add_argument("--jobs-high", type=int, default=640, help=f"jobs per phase at c={HIGH}")
    parser.add_argument("--cap", type=float, default=120.0, help="seconds a phase may take")
    parser.add_argument("--keep-logs", type=Path, help="copy every process's log here")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 100 and 320 jobs")
    args = parser.parse_args()
    rounds, jobs_low, jobs_high = args.rounds, args.jobs_low, args.jobs_high
    if args.quick:
        rounds, jobs_low, jobs_high = 3, 100, 320
    if min(rounds, jobs_low, jobs_high) < 1 or args.cap <= 0:
        parser.error("--rounds, --jobs-low, --jobs-high and --cap must be positive")
    started = time.monotonic()
    raw = run(rounds, jobs_low, jobs_high, args.cap, args.keep_logs)
    took_s = round(time.monotonic() - started, 1)
    rows = summarize(raw)
    text = table(raw, rows)
    print(text)
    print(f"(took {took_s} s)")
    write_results(raw, rows, text, took_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
