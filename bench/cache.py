"""The result cache, measured: cold vs warm builds, hit latency, throughput on pure hits,
and hits from one Redis node against hits from a Redis Cluster.

Two distlb-servers behind a distlb-balancer with ``--cache-redis`` (a real
redis-server on loopback). Per round: Redis is flushed, a multi-file C project is
built cold through the real distcc client, then the same sources from another
directory (warm: every job a hit). Then, with the asyncio client: the latency of
hits on a job whose object is ~100 KB (vs compiling it on a server directly), and
the balancer's throughput when every job is a hit. Medians of the rounds.

Single node vs cluster: a second balancer in front of the same servers uses a real
three-master Redis Cluster (``redis+cluster://``). Both are filled with the same few
~100 KB objects (their keys spread over the masters); then, per round, each balancer
serves the same number of hits, the two taking turns to go first; the table gives the
medians of the rounds' p50 and p99, each with its spread over the rounds (± half of
max - min, as a share of the median), and the median of the rounds' cluster/single
ratios.

    .venv/bin/python -m bench.cache [--rounds R] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.balancer_overhead import start_servers
from bench.harness import (
    HOST,
    Proc,
    free_ports,
    get_json,
    quantile_ms,
    start,
    start_balancer,
    stop,
    wait_ready,
)
from client import compile_remote
from tests.support.projects import write_c_project
from tests.support.redis_cluster import RedisClusterNodes
from tests.support.secrets import write_secret
from wire import Request

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
BIG_OBJECT_BYTES = 100_000


def big_source(variant: int = 0) -> bytes:
    """Preprocessed C whose object is about 100 KB (a table the compiler must emit)."""
    values = ",".join(str((i * 7919 + variant) % 251) for i in range(BIG_OBJECT_BYTES))
    return f"const unsigned char table[{BIG_OBJECT_BYTES}] = {{{values}}};\n".encode()


CLUSTER_KEYS = 6
"""Distinct ~100 KB objects in the single-vs-cluster comparison (their keys fall on
every master of three, or nearly)."""


def _hits(admin_port: int) -> int:
    cache = get_json(admin_port, "/status")["cache"]
    assert isinstance(cache, dict)
    return int(cache["hits"])


def _wait_stored(admin_port: int, count: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        cache = get_json(admin_port, "/status")["cache"]
        if isinstance(cache, dict) and int(cache["stored"]) >= count:
            return
        time.sleep(0.05)
    raise RuntimeError(f"balancer on admin port {admin_port}: fewer than {count} stored")


async def _cycle(port: int, requests: list[Request], count: int) -> list[float]:
    out = []
    for index in range(count):
        out.extend(await latencies(port, requests[index % len(requests)], 1))
    return out


def single_vs_cluster(
    single: tuple[int, int], cluster: tuple[int, int], rounds: int, per_round: int
) -> dict[str, list[float]]:
    """Per round, the hit p50 and p99 (ms) through each balancer ((port, admin port))."""
    requests = [
        Request(1, ("gcc", "-O0", "-c", f"big{i}.c", "-o", f"big{i}.o"), big_source(i + 1))
        for i in range(CLUSTER_KEYS)
    ]
    for port, admin_port in (single, cluster):
        stored = get_json(admin_port, "/status")["cache"]
        assert isinstance(stored, dict)
        for request in requests:
            asyncio.run(latencies(port, request, 1))  # a miss: compiled, then stored
        _wait_stored(admin_port, int(stored["stored"]) + len(requests))
    out: dict[str, list[float]] = {k: [] for k in ("single_p50", "single_p99",
                                                   "cluster_p50", "cluster_p99")}  # fmt: skip
    for round_no in range(rounds):
        order = [("single", single), ("cluster", cluster)]
        for name, (port, admin_port) in order if round_no % 2 == 0 else order[::-1]:
            hits_before = _hits(admin_port)
            seconds = asyncio.run(_cycle(port, requests, per_round))
            if _hits(admin_port) - hits_before != per_round:
                raise RuntimeError(f"{name}: not every lookup was a hit; the numbers would lie")
            out[f"{name}_p50"].append(quantile_ms(seconds, 0.5, 3))
            out[f"{name}_p99"].append(quantile_ms(seconds, 0.99, 3))
    return out


def spread(values: list[float]) -> str:
    """± half of (max - min), as a share of the median."""
    return f"±{100 * (max(values) - min(values)) / statistics.median(values) / 2:.0f}%"


def build(project: Path, port: int, work: Path) -> float:
    dd = tempfile.mkdtemp(prefix="dd-", dir=work)
    env = {
        "PATH": "/usr/bin:/bin",
        "DISTCC_DIR": dd,
        "DISTCC_FALLBACK": "0",
        "DISTCC_HOSTS": f"{HOST}:{port}/8,lzo",
        "HOME": str(work),
    }
    started = time.monotonic()
    result = subprocess.run(
        ["timeout", "300", "make", "-j8", "CC=distcc gcc"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"build failed in {project}:\n{result.stderr[-2000:]}")
    return time.monotonic() - started


async def latencies(port: int, request: Request, count: int) -> list[float]:
    out = []
    for _ in range(count):
        started = time.perf_counter()
        reply = await compile_remote(HOST, port, request, timeout_s=60)
        if reply.status != 0 or len(reply.obj) < BIG_OBJECT_BYTES // 2:
            raise RuntimeError(f"bad reply: status {reply.status}, {len(reply.obj)} bytes")
        out.append(time.perf_counter() - started)
    return out


async def throughput(
    port: int, requests: list[Request], concurrency: int, jobs: int, cap_s: float
) -> float:
    done = 0
    started = time.monotonic()

    async def worker(index: int) -> None:
        nonlocal done
        while done < jobs and time.monotonic() - started < cap_s:
            done += 1
            await compile_remote(HOST, port, requests[(index + done) % len(requests)], timeout_s=60)

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return done / (time.monotonic() - started)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cache", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--modules", type=int, default=40)
    parser.add_argument("--quick", action="store_true", help="3 rounds, smaller loads")
    args = parser.parse_args()
    rounds, hits_n, burst = (3, 50, 300) if args.quick else (args.rounds, 200, 2000)
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is needed (scripts/bootstrap.sh installs it)")
    work = Path(tempfile.mkdtemp(prefix="distlb-bench-cache-"))
    work.chmod(0o755)
    procs: list[Proc] = []
    began = time.monotonic()
    try:
        (redis_port,) = free_ports(1)
        redis_proc = start(
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
        wait_ready(redis_proc, redis_port)
        servers = start_servers(work, procs)
        url = f"redis://{HOST}:{redis_port}/0"
        secret = ("--cache-secret-file", str(write_secret(work / "cache-secret")))
        balancer = start_balancer(work, servers, procs, "balancer", ("--cache-redis", url, *secret))
        cluster = RedisClusterNodes(masters=3)
        on_cluster = start_balancer(
            work, servers, procs, "balancer-cluster", ("--cache-redis", cluster.url, *secret)
        )
        cold, warm = [], []
        for round_no in range(rounds):
            subprocess.run(
                ["redis-cli", "-p", str(redis_port), "FLUSHALL"], check=True, capture_output=True
            )
            cold.append(
                build(write_c_project(work / f"cold{round_no}", args.modules), balancer.port, work)
            )
            stored_target = args.modules + 1
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                cache = get_json(balancer.admin_port, "/status")["cache"]
                if isinstance(cache, dict) and int(cache["stored"]) >= stored_target * (
                    round_no + 1
                ):
                    break
                time.sleep(0.05)
            warm.append(
                build(write_c_project(work / f"warm{round_no}", args.modules), balancer.port, work)
            )
        request = Request(1, ("gcc", "-O0", "-c", "big.c", "-o", "big.o"), big_source())
        direct = asyncio.run(latencies(servers[0].port, request, max(10, hits_n // 10)))
        asyncio.run(latencies(balancer.port, request, 1))  # stores it
        time.sleep(0.5)  # the store runs in the background; a miss here would only be measured
        hits = asyncio.run(latencies(balancer.port, request, hits_n))
        small = [
            Request(1, ("gcc", "-c", f"t{i}.c", "-o", f"t{i}.o"), b"int t%d;\n" % i)
            for i in range(16)
        ]
        asyncio.run(throughput(balancer.port, small, 4, 16, 60))  # fill the cache
        rate = asyncio.run(throughput(balancer.port, small, 32, burst, 60))
        cache = get_json(balancer.admin_port, "/status")["cache"]
        compared = single_vs_cluster(
            (balancer.port, balancer.admin_port),
            (on_cluster.port, on_cluster.admin_port),
            rounds,
            hits_n,
        )
        cluster_cache = get_json(on_cluster.admin_port, "/status")["cache"]
    finally:
        for proc in reversed(procs):
            stop(proc)
        if "cluster" in locals():
            cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    ratios = {
        q: statistics.median(
            c / s for c, s in zip(compared[f"cluster_{q}"], compared[f"single_{q}"], strict=True)
        )
        for q in ("p50", "p99")
    }
    cold_s, warm_s = statistics.median(cold), statistics.median(warm)
    rows = [
        "| measure | value |",
        "|---|---:|",
        f"| cold build, median s ({args.modules + 1} jobs, -j8) | {cold_s:.2f} |",
        f"| warm build, median s | {warm_s:.2f} |",
        f"| warm / cold | {warm_s / cold_s:.3f} |",
        f"| 100 KB object: compile on a server, p50 ms | {quantile_ms(direct, 0.5, 3):.1f} |",
        f"| 100 KB object: cache hit via balancer, p50 ms | {quantile_ms(hits, 0.5, 3):.2f} |",
        f"| 100 KB object: cache hit via balancer, p99 ms | {quantile_ms(hits, 0.99, 3):.2f} |",
        f"| pure hits, 32 concurrent clients, jobs/s | {rate:.0f} |",
        *(
            f"| 100 KB hits, {where}, {q} ms (median of {rounds} rounds, spread) | "
            f"{statistics.median(compared[f'{key}_{q}']):.2f} ({spread(compared[f'{key}_{q}'])}) |"
            for q in ("p50", "p99")
            for key, where in (("single", "one Redis node"), ("cluster", "3-master cluster"))
        ),
        f"| cluster / one node, hit p50 (median of the rounds' ratios) | {ratios['p50']:.2f} |",
        f"| cluster / one node, hit p99 (median of the rounds' ratios) | {ratios['p99']:.2f} |",
    ]
    table = "\n".join(rows)
    note = (
        f"{rounds} rounds; builds through the real distcc client; balancer cache stats at "
        f"the end: {json.dumps(cache)}. Single vs cluster: {hits_n} hits per balancer per "
        f"round over {CLUSTER_KEYS} keys; the cluster balancer's nodes at the end: "
        f"{json.dumps(cluster_cache.get('nodes') if isinstance(cluster_cache, dict) else None)}. "
        f"Took {time.monotonic() - began:.0f} s."
    )
    print(table)
    print(note)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "cache.md").write_text(f"# Result cache\n\n{table}\n\n{note}\n")
    (RESULTS_DIR / "cache.json").write_text(
        json.dumps(
            {
                "cold_s": cold,
                "warm_s": warm,
                "direct_ms": [1000 * x for x in direct],
                "hit_ms": [1000 * x for x in hits],
                "hits_per_s": rate,
                "cache": cache,
                "single_vs_cluster_ms": compared,
                "cluster_over_single": ratios,
                "cluster_cache": cluster_cache,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
