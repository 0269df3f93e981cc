"""Does the balancer keep up with a big farm? Its CPU per job, by farm size.

N fake backends that answer every compile at once (bench/instant_backends.py,
InstantBackendForBench: one process serves all of them) stand behind distlb-balancer
and behind HAProxy ``leastconn`` in the same run. For each N, the balancer idles a
while (its reports and probes: CPU % of a core per 100 backends), then distlb-loadgen
sends tiny and 100 KB jobs at 64 and 256 at once, directly to one backend, through
the balancer and through HAProxy. Prints, per N and path: jobs/s, the proxy's CPU ms
per job (from /proc), p50/p99 latency added against direct, and the balancer's RSS.

    .venv/bin/python -m bench.scale [--quick] [--sizes 2,50,200,500] [--workers N]

Profile the hot path with py-spy (``py-spy record -o profile.svg --pid PID``) or run
the balancer under ``python -m cProfile`` by hand; the numbers below are what
bench/results/scale.md records.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypedDict

from bench import harness
from bench.harness import HOST, Proc, free_ports, get_json, start, stop_all, wait_ready

cpu_s = harness.cpu_s

ROOT = Path(__file__).resolve().parent.parent

BIN = ROOT / ".venv" / "bin"
PYTHON = BIN / "python"
HAPROXY = "/usr/sbin/haproxy"
RESULTS_DIR = ROOT / "bench" / "results"
SLOTS = 16
IDLE_S = 6.0
PHASE_CAP_S = 20.0
JOBS = {"tiny": 3000, "100kb": 1200}
SIZE_KB = {"tiny": 0, "100kb": 100}
HAPROXY_CFG = """global
    maxconn 4096
defaults
    mode tcp
    timeout connect 2s
    timeout client 120s
    timeout server 120s
frontend distcc
    bind {host}:{port}
    default_backend farm
backend farm
    balance leastconn
{servers}
"""


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(x for x in status if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


class LoadSummary(TypedDict):
    """What ``distlb-loadgen --json`` prints (client/loadgen.py ``Summary.as_dict``),
    the fields read here."""

    ok: int
    failed: int
    turned_away: int
    seconds: float
    jobs_per_s: float
    p50_ms: float | None
    p99_ms: float | None


class Row(TypedDict):
    """One farm size, job size, concurrency and path: a line of the table."""

    backends: int
    size: str
    concurrency: int
    path: str
    ok: int
    failed: int
    turned_away: int
    jobs_s: float
    cpu_ms_job: float | None
    p50_added_ms: float | None
    p99_added_ms: float | None
    rss_mb: float
    idle_pct_per_100: float | None


@dataclass
class Farm:
    backends: list[tuple[int, int]]
    fakes: Proc
    balancer: Proc
    balancer_port: int
    admin_port: int
    haproxy: Proc | None
    """None when not started (the memory step needs none)."""
    haproxy_port: int
    workers: list[int]


def start_instant_backends(
    work: Path, name: str, count: int, procs: list[Proc], hold_s: float = 0.0
) -> tuple[Proc, list[tuple[int, int]]]:
    """``count`` instant backends in one process: it, and each backend's (port, status
    port) once it says them."""
    fakes = start(name, [str(PYTHON), "-m", "bench.instant_backends", "--count", str(count),
                         "--slots", str(SLOTS), "--hold-s", str(hold_s)], work, procs)  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        if time.monotonic() > deadline or fakes.popen.poll() is not None:
            raise RuntimeError(f"fake backends did not start: {fakes.log_path.read_text()[-500:]}")
        for line in fakes.log_path.read_text().splitlines():
            if line.startswith("{"):
                return fakes, [(int(p), int(s)) for p, s in json.loads(line)["backends"]]
        time.sleep(0.1)


def write_balancer_config(path: Path, backends: list[tuple[int, int]]) -> Path:
    """A balancer config naming ``backends`` ((port, status port) on HOST)."""
    path.write_text("backend = [\n" + "".join(
        f'  "{HOST}:{p},status={s}",\n' for p, s in backends) + "]\n")  # fmt: skip
    return path


def write_haproxy_config(path: Path, ports: list[int], port: int) -> Path:
    """HAProxy leastconn on ``port`` over backends at ``ports``, SLOTS connections each."""
    servers = "\n".join(f"    server s{i} {HOST}:{p} maxconn {SLOTS}" for i, p in enumerate(ports))
    path.write_text(HAPROXY_CFG.format(host=HOST, port=port, servers=servers))
    return path


def start_farm(
    work: Path,
    count: int,
    workers: int,
    procs: list[Proc],
    hold_s: float = 0.0,
    extra: tuple[str, ...] = (),
    haproxy: bool = True,
) -> Farm:
    fakes, backends = start_instant_backends(work, f"fakes-{count}-{hold_s:g}", count, procs,
                                             hold_s)  # fmt: skip
    port, admin, hport = free_ports(3)
    config = write_balancer_config(work / f"balancer-{count}.toml", backends)
    command = [str(BIN / "distlb-balancer"), "--config", str(config), "--listen", HOST,
               "--port", str(port), "--admin-port", str(admin), "--log-format", "json",
               "--log-level", "warning", "--queue-timeout", "30", *extra]  # fmt: skip
    if workers > 1:
        command += ["--workers", str(workers)]
    balancer = start(f"balancer-{count}-{hold_s:g}", command, work, procs)
    wait_ready(balancer, port)
    wait_ready(balancer, admin)  # (it opens after the jobs' port)
    harness.wait_healthy(admin, count)
    cfg = write_haproxy_config(work / f"haproxy-{count}.cfg", [p for p, _ in backends], hport)
    haproxy_proc = None
    if haproxy:
        haproxy_proc = start(f"haproxy-{count}", [HAPROXY, "-db", "-f", str(cfg)], work, procs)
        wait_ready(haproxy_proc, hport)
    worker_pids = _worker_pids(balancer.popen.pid)
    return Farm(backends, fakes, balancer, port, admin, haproxy_proc, hport, worker_pids)


def _worker_pids(pid: int) -> list[int]:
    """The balancer's process and its worker processes (with --workers)."""
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                        children.append(int(entry))
            except OSError:
                continue
    return [pid, *children]


def load(
    port: int, jobs: int, concurrency: int, size: str, cap_s: float = PHASE_CAP_S
) -> LoadSummary:
    done = subprocess.run(
        [str(BIN / "distlb-loadgen"), f"{HOST}:{port}", "--jobs", str(jobs), "--concurrency",
         str(concurrency), "--duration", str(cap_s), "--size-kb", str(SIZE_KB[size]),
         "--json", "--timeout", "60"],
        capture_output=True, text=True, timeout=cap_s + 120, check=False,
    )  # fmt: skip
    if not done.stdout.strip():
        raise RuntimeError(f"loadgen printed nothing: {done.stderr[-500:]}")
    summary: LoadSummary = json.loads(done.stdout)
    assert isinstance(summary, dict)
    return summary


def measure(farm: Farm, count: int, sizes: list[str], concurrencies: list[int]) -> list[Row]:
    rows: list[Row] = []
    assert farm.haproxy is not None
    pids = {"balancer": farm.workers, "haproxy": [farm.haproxy.popen.pid]}
    # Idle: only reports and probes.
    before = sum(cpu_s(p) for p in farm.workers)
    time.sleep(IDLE_S)
    idle = (sum(cpu_s(p) for p in farm.workers) - before) / IDLE_S * 100
    for size in sizes:
        for concurrency in concurrencies:
            direct = load(farm.backends[0][0], JOBS[size], concurrency, size)
            for path, port in (("balancer", farm.balancer_port), ("haproxy", farm.haproxy_port)):
                before = sum(cpu_s(p) for p in pids[path])
                summary = load(port, JOBS[size], concurrency, size)
                used = sum(cpu_s(p) for p in pids[path]) - before
                ok = int(summary["ok"])
                seconds = float(summary["seconds"])
                rows.append({
                    "backends": count, "size": size, "concurrency": concurrency, "path": path,
                    "ok": ok, "failed": summary["failed"], "turned_away": summary["turned_away"],
                    "jobs_s": round(ok / seconds, 1) if seconds else 0.0,
                    "cpu_ms_job": round(used * 1000 / ok, 3) if ok else None,
                    "p50_added_ms": _added(summary, direct, "p50_ms"),
                    "p99_added_ms": _added(summary, direct, "p99_ms"),
                    "rss_mb": round(sum(rss_mb(p) for p in pids[path]), 1),
                    "idle_pct_per_100": (
                        round(idle / count * 100, 2) if path == "balancer" else None
                    ),
                })  # fmt: skip
    return rows


MEMORY_JOBS = 5000
MEMORY_BACKENDS = 500
HOLD_S = 20.0


def memory_in_flight(work: Path, workers: int) -> dict[str, object]:
    """The balancer's RSS with MEMORY_JOBS tiny jobs in flight (held by the backends),
    against its RSS idle on the same farm: memory per job in flight."""
    procs: list[Proc] = []
    try:
        caps = ("--max-connections", "20000", "--max-connections-per-address", "20000")
        farm = start_farm(work, MEMORY_BACKENDS, workers, procs, HOLD_S, caps, haproxy=False)
        idle = sum(rss_mb(p) for p in farm.workers)
        loadgen = subprocess.Popen(
            [str(BIN / "distlb-loadgen"), f"{HOST}:{farm.balancer_port}", "--jobs",
             str(MEMORY_JOBS), "--concurrency", str(MEMORY_JOBS), "--duration", "90",
             "--json", "--timeout", "120"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            peak, most = idle, 0
            deadline = time.monotonic() + HOLD_S
            while time.monotonic() < deadline:
                totals = get_json(farm.admin_port, "/status")["totals"]
                assert isinstance(totals, dict)
                in_flight = int(totals["in_flight"])
                rss = sum(rss_mb(p) for p in farm.workers)
                if in_flight >= most:
                    most, peak = in_flight, max(peak, rss)
                if most >= MEMORY_JOBS:
                    break
                time.sleep(0.5)
        finally:
            loadgen.communicate(timeout=300)
        return {
            "jobs_in_flight": most,
            "rss_idle_mb": round(idle, 1),
            "rss_peak_mb": round(peak, 1),
            "kb_per_job": round((peak - idle) * 1024 / most, 1) if most else None,
        }
    finally:
        stop_all(procs)


def compare_workers(work: Path, workers: int, count: int, rounds: int) -> str:
    """CPU per job of the balancer with ``workers`` workers against one, over the same
    fake farm size, alternating, ``rounds`` times each (tiny jobs, 64 clients)."""
    runs: dict[int, list[tuple[float, float]]] = {1: [], workers: []}
    for _ in range(rounds):
        for n in (1, workers):
            procs: list[Proc] = []
            try:
                farm = start_farm(work, count, n, procs, haproxy=False)
                before = sum(cpu_s(p) for p in farm.workers)
                summary = load(farm.balancer_port, JOBS["tiny"], 64, "tiny")
                used = sum(cpu_s(p) for p in farm.workers) - before
                ok, seconds = int(summary["ok"]), float(summary["seconds"])
                runs[n].append((used * 1000 / ok, ok / seconds))
            finally:
                stop_all(procs)
    lines = ["| workers | CPU ms/job (runs) | median | jobs/s median |", "|---:|---|---:|---:|"]
    medians = {}
    for n, values in runs.items():
        cpu = sorted(v[0] for v in values)
        rate = sorted(v[1] for v in values)
        medians[n] = cpu[len(cpu) // 2]
        lines.append(f"| {n} | {', '.join(f'{c:.3f}' for c in cpu)} | {medians[n]:.3f} "
                     f"| {rate[len(rate) // 2]:.0f} |")  # fmt: skip
    lines.append(f"\n- CPU per job, {workers} workers / 1, N={count}: "
                 f"{medians[workers] / medians[1]:.2f} (goal <= 1.1)")  # fmt: skip
    return "\n".join(lines)


def _added(
    summary: LoadSummary, direct: LoadSummary, key: Literal["p50_ms", "p99_ms"]
) -> float | None:
    ours, theirs = summary.get(key), direct.get(key)
    if ours is None or theirs is None:
        return None
    return round(float(ours) - float(theirs), 2)


def table(rows: list[Row]) -> str:
    lines = [
        "| backends | size | clients | path | jobs/s | CPU ms/job | p50 added ms | p99 added ms "
        "| RSS MB | idle % core per 100 backends |",
        "|---:|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backends']} | {r['size']} | {r['concurrency']} | {r['path']} | {r['jobs_s']} "
            f"| {r['cpu_ms_job']} | {r['p50_added_ms']} | {r['p99_added_ms']} | {r['rss_mb']} "
            f"| {r['idle_pct_per_100'] if r['idle_pct_per_100'] is not None else ''} |"
        )
    return "\n".join(lines)


def ratios(rows: list[Row]) -> str:
    """The issue's goals, as ratios from this run."""

    def cpu(n: int, path: str, size: str = "tiny", c: int = 64) -> float | None:
        for r in rows:
            if (r["backends"], r["path"], r["size"], r["concurrency"]) == (n, path, size, c):
                value = r["cpu_ms_job"]
                return float(value) if value is not None else None
        return None

    sizes = sorted({int(r["backends"]) for r in rows})
    small, large = sizes[0], sizes[-1]
    out = []
    a, b = cpu(large, "balancer"), cpu(small, "balancer")
    if a and b:
        out.append(f"- CPU per job at N={large} / N={small}: {a / b:.2f} (goal <= 1.2)")
    for n in (small, large):
        ours, theirs = cpu(n, "balancer"), cpu(n, "haproxy")
        if ours and theirs:
            out.append(f"- CPU per job vs HAProxy at N={n}: {ours / theirs:.2f} (goal <= 2.5)")
    idle = [value for r in rows if (value := r["idle_pct_per_100"]) is not None]
    if idle:
        out.append(f"- idle: up to {max(idle)} % of a core per 100 backends (goal <= 1)")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="N in 2, 200; tiny jobs at 64")
    parser.add_argument("--sizes", default="2,50,200,500")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--compare-workers",
        type=int,
        metavar="K",
        help="only compare K workers with one (N=2, tiny jobs, 3 rounds each)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.compare_workers:
        work = Path(tempfile.mkdtemp(prefix="distlb-scale-"))
        text = compare_workers(work, args.compare_workers, 2, args.rounds)
        print(text)
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        (RESULTS_DIR / "scale-workers.md").write_text(f"# Scale: --workers\n\n{text}\n")
        return 0
    counts = [2, 200] if args.quick else [int(x) for x in args.sizes.split(",")]
    sizes = ["tiny"] if args.quick else ["tiny", "100kb"]
    concurrencies = [64] if args.quick else [64, 256]
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="distlb-scale-"))
    rows: list[Row] = []
    for count in counts:
        procs: list[Proc] = []
        try:
            farm = start_farm(work, count, args.workers, procs)
            rows += measure(farm, count, sizes, concurrencies)
        finally:
            stop_all(procs)
    print(table(rows) + "\n\n" + ratios(rows), flush=True)
    memory = memory_in_flight(work, args.workers)
    text = table(rows) + "\n\n" + ratios(rows)
    text += (
        f"\n- memory: {memory['jobs_in_flight']} tiny jobs in flight (over {MEMORY_BACKENDS}"
        f" backends that hold each {HOLD_S:g} s): RSS {memory['rss_idle_mb']} MB idle, "
        f"{memory['rss_peak_mb']} MB then, {memory['kb_per_job']} KB per job in flight"
    )
    took = round(time.monotonic() - started, 1)
    print(text)
    print(f"(took {took} s; workers {args.workers})")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    name = "scale-quick" if args.quick else "scale"
    if args.workers > 1:
        name += f"-workers{args.workers}"
    result = {"rows": rows, "memory": memory, "took_s": took}
    (RESULTS_DIR / f"{name}.json").write_text(json.dumps(result, indent=1))
    (RESULTS_DIR / f"{name}.md").write_text(f"# Scale\n\n{text}\n\nTook {took} s.\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
