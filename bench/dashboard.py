"""What the dashboard's viewers cost the balancer while the farm idles.

Three distlb-servers behind one distlb-balancer, no jobs. Each round measures the
balancer's CPU (user + system, from /proc) over the same window three ways, in
alternating order: no viewer (the baseline: health checks and report polls), 50 viewers
on the live stream (/events, the page's default), and 50 viewers polling
/dashboard.json every 2 s (the page's fallback). Prints CPU as % of one core, medians
of the rounds with their spread, and the live viewers' cost against the baseline;
writes the table to bench/results/dashboard.md. Goal: under 5 % of a core with 50 live
viewers.

    .venv/bin/python -m bench.dashboard [--rounds R] [--viewers N] [--window S] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from bench import harness
from bench.harness import HOST, Proc, free_ports, start, stop_all, wait_ready

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
RESULTS = ROOT / "bench" / "results" / "dashboard.md"
SERVERS = 3


async def _live(url: str, until: float, counts: list[int]) -> None:
    """One live viewer: read the stream, count its updates."""
    timeout = aiohttp.ClientTimeout(total=None, sock_read=30)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as reply:
        assert reply.status == 200, reply.status
        while time.monotonic() < until:
            line = await reply.content.readline()
            if not line:
                raise RuntimeError("the live stream ended")
            if line.startswith(b"event: update"):
                counts[0] += 1


async def _poller(url: str, until: float, counts: list[int]) -> None:
    """One polling viewer: the page's fallback, every 2 s."""
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < until:
            async with session.get(url) as reply:
                assert reply.status == 200, reply.status
                await reply.read()
                counts[0] += 1
            await asyncio.sleep(2.0)


async def _watch(
    kind: str, admin: int, viewers: int, window_s: float, pid: int
) -> tuple[float, int]:
    """Viewers connected, then the balancer's CPU over ``window_s``: (% of a core,
    updates the viewers got in the window)."""
    counts = [0]
    settle_s = 3.0
    until = time.monotonic() + settle_s + window_s
    path = "/events" if kind == "live" else "/dashboard.json"
    worker = _live if kind == "live" else _poller
    tasks = [asyncio.create_task(worker(f"http://{HOST}:{admin}{path}", until, counts))
             for _ in range(viewers if kind != "none" else 0)]  # fmt: skip
    try:
        await asyncio.sleep(settle_s)  # (all connected and the first update sent)
        got, before, began = counts[0], harness.cpu_s(pid), time.monotonic()
        await asyncio.sleep(window_s)
        used = harness.cpu_s(pid) - before
        elapsed = time.monotonic() - began
        return 100 * used / elapsed, counts[0] - got
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.dashboard", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--viewers", type=int, default=50)
    parser.add_argument("--window", type=float, default=20.0, help="seconds measured")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 8 s")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.window = 2, 8.0
    procs: list[Proc] = []
    work = Path(tempfile.mkdtemp(prefix="distlb-bench-dashboard-"))
    results: dict[str, list[float]] = {"none": [], "live": [], "polling": []}
    updates: dict[str, list[int]] = {"none": [], "live": [], "polling": []}
    try:
        ports = free_ports(2 * SERVERS + 2)
        backends = []
        for i in range(SERVERS):
            port, stats = ports[2 * i], ports[2 * i + 1]
            command = [str(BIN / "distlb-server"), "--listen", HOST, "--port", str(port),
                       "--stats-port", str(stats), "--jobs", "2",
                       "--offer-by-load", "off"]  # fmt: skip
            server = start(f"server{i}", command, work, procs)
            wait_ready(server, stats)
            backends += ["--backend", f"{HOST}:{port},status={stats}"]
        port, admin = ports[-2], ports[-1]
        command = [str(BIN / "distlb-balancer"), "--listen", HOST, "--port", str(port),
                   "--admin-port", str(admin), *backends,
                   "--dashboard-viewers", str(args.viewers + 8)]  # fmt: skip
        balancer = start("balancer", command, work, procs)
        wait_ready(balancer, admin)
        harness.wait_healthy(admin, SERVERS, 30)
        for r in range(args.rounds):
            order = ["none", "live", "polling"]
            if r % 2:
                order.reverse()
            for kind in order:
                cpu, got = asyncio.run(
                    _watch(kind, admin, args.viewers, args.window, balancer.popen.pid)
                )
                results[kind].append(cpu)
                updates[kind].append(got)
                print(f"round {r + 1} {kind:8s} cpu {cpu:5.2f} % of a core, {got} updates",
                      flush=True)  # fmt: skip
    finally:
        stop_all(procs)

    def median(kind: str) -> float:
        return statistics.median(results[kind])

    base = median("none")
    lines = [
        f"# Dashboard viewers on an idle farm ({SERVERS} servers, {args.viewers} viewers, "
        f"{args.rounds} rounds of {args.window:.0f} s)",
        "",
        "`.venv/bin/python -m bench.dashboard" + (" --quick" if args.quick else "") + "`",
        "",
        "| viewers | balancer CPU, % of a core (each round) | median | spread | over idle | "
        "updates/s received |",
        "|---|---|---|---|---|---|",
    ]
    for kind, label in (("none", "none (idle)"), ("live", f"{args.viewers} live (/events)"),
                        ("polling", f"{args.viewers} polling every 2 s")):  # fmt: skip
        values = results[kind]
        rate = statistics.median(updates[kind]) / args.window
        lines.append(
            f"| {label} | {', '.join(f'{v:.2f}' for v in values)} | {median(kind):.2f} "
            f"| {min(values):.2f} to {max(values):.2f} | {median(kind) - base:+.2f} | {rate:.1f} |"
        )
    live = median("live")
    lines += ["", f"Goal: under 5 % of a core with {args.viewers} live viewers: "
              f"{'met' if live < 5 else 'missed'} ({live:.2f} %)."]  # fmt: skip
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
