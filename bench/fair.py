"""Fair share (issue 30): a small build's time while another client floods the farm, with
fair share and with the order before it (``--fair-share off``: longest waiting first),
in one run, with the real distcc client.

One distlb-server with ``--slots`` slots runs a stand-in compiler, ``vary-cc``, that
sleeps 0.5 to 1.5 x ``--seconds`` (drawn from a checksum of the job's source, so a file
takes the same time in every run and both modes get the same work), then compiles: the
farm's capacity is known and the same for every run, and jobs end at varied times as
real compiles do (with one fixed time, every slot would free at once, and a client whose job
just ended would always find its slot taken by a waiting job before its next one
arrives). Two balancers in front of it, one with fair share on and one off, are used in
turn (rounds alternate which first). In each: the small client builds its ``--small``
files at ``-j4`` alone; then the flood client (127.0.0.1) starts ``--flood`` jobs at
once, and once its jobs fill the farm and wait and it has run ``--head-start`` seconds
(a flood that has been running a while, as a CI job's or a ``make -j500``'s has when a
colleague starts a build), the small client builds again. Each small build comes from an
address of its own (127.0.0.2 on, through a relay that connects from there): a developer
with no recent use, not one whose last build is still fresh in its share's memory.
Reported, as medians over the rounds with their spread: the small build beside the flood
over the same build alone (goal: <= 1.3 x with fair share; the old order's figure beside
it), and the flood's throughput with fair share over without (goal: within 5 %): its
jobs and the small build's, all of the farm's work while it floods, over the time from
its start until both are done (with fair share the flood gives the small build slots,
without it the small build comes after it: the same work either way, so this is what
fair share costs the farm). Writes bench/results/fair.md.

    .venv/bin/python -m bench.fair [--rounds R] [--slots N] [--seconds S]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.harness import Balancer, Proc, free_ports, get_json, start, start_balancer, stop_all
from bench.harness import wait_ready as wait_port
from bench.server_vs_distccd import DISTLB_SERVER, RESULTS_DIR
from tests.support.distcc import distcc_env
from tests.support.fault_relay import RelayThread

SMALL_GOAL = 1.3
FLOOD_GOAL = 0.05
CLIENT_TIMEOUT_S = 600
VARY_CC = """#!/bin/sh
for arg in "$@"; do
    case "$arg" in -E|--version) exec gcc "$@";; esac
done
base_ms=$(cat "$(dirname "$0")/vary-cc.ms")
draw=0
for arg in "$@"; do
    case "$arg" in *.i) [ -f "$arg" ] && draw=$(cksum < "$arg" | cut -d' ' -f1);; esac
done
ms=$((base_ms / 2 + base_ms * (draw % 1001) / 1000))
sleep "$((ms / 1000)).$(printf '%03d' $((ms % 1000)))"
exec gcc "$@"
"""


def write_vary_cc(bin_dir: Path, seconds: float) -> None:
    bin_dir.mkdir(mode=0o755, parents=True)
    (bin_dir / "vary-cc").write_text(VARY_CC)
    (bin_dir / "vary-cc").chmod(0o755)
    (bin_dir / "vary-cc.ms").write_text(f"{round(seconds * 1000)}\n")
    (bin_dir / "vary-cc.ms").chmod(0o644)


class Addresses:
    """A relay to a balancer per small build, each connecting from a new address."""

    def __init__(self) -> None:
        self.relays: list[RelayThread] = []

    def relay(self, balancer: Balancer) -> RelayThread:
        source = f"127.0.0.{2 + len(self.relays)}"
        self.relays.append(RelayThread(("127.0.0.1", balancer.port), source=source))
        return self.relays[-1]

    def close(self) -> None:
        for relay in self.relays:
            relay.close()


@dataclass(frozen=True)
class Server:
    port: int
    stats_port: int


def _sources(root: Path, name: str, count: int) -> list[str]:
    root.mkdir(parents=True, mode=0o755)
    for index in range(count):
        (root / f"{name}{index}.c").write_text(f"int {name}{index}(void) {{ return {index}; }}\n")
    return [f"{name}{index}.c" for index in range(count)]


def build(root: Path, files: list[str], port: int, bin_dir: Path, jobs: int) -> float:
    """Compile ``files`` with the real client, ``jobs`` at a time; the wall time.
    Raises unless every compile succeeded on the farm (no local fallback)."""

    def one(name: str) -> int:
        env = distcc_env(f"127.0.0.1:{port}/64", fallback=False)
        env["PATH"] = f"{bin_dir}:/usr/bin:/bin"
        return subprocess.run(
            ["timeout", str(CLIENT_TIMEOUT_S), "distcc", "vary-cc", "-c", name, "-o",
             name.replace(".c", ".o")],
            cwd=root, env=env, capture_output=True, check=False,
        ).returncode  # fmt: skip

    started = time.monotonic()
    with ThreadPoolExecutor(jobs) as pool:
        codes = list(pool.map(one, files))
    if any(codes):
        raise RuntimeError(f"{root.name}: compiles failed: {codes}")
    return time.monotonic() - started


def waiting(balancer: Balancer) -> int:
    shares = get_json(balancer.admin_port, "/status")["shares"]
    assert isinstance(shares, list)
    return sum(int(share["waiting"]) for share in shares)


def one_mode(
    work: Path, balancer: Balancer, addresses: Addresses, bin_dir: Path, args: argparse.Namespace,
    tag: str,
) -> tuple[float, float, float]:  # fmt: skip
    """(small alone, small beside the flood, the flood's time until both were done)
    through ``balancer``."""
    small = _sources(work / f"{tag}-small-alone", "s", args.small)
    alone = build(work / f"{tag}-small-alone", small, addresses.relay(balancer).port, bin_dir, 4)
    flood_files = _sources(work / f"{tag}-flood", "f", args.flood)
    beside_files = _sources(work / f"{tag}-small-beside", "s", args.small)
    flood_root, jobs = work / f"{tag}-flood", args.flood_jobs

    failed: list[BaseException] = []

    def flood() -> None:
        try:
            build(flood_root, flood_files, balancer.port, bin_dir, jobs)
        except BaseException as exc:  # (told after the join)
            failed.append(exc)

    flooding = threading.Thread(target=flood)
    started = time.monotonic()
    flooding.start()
    try:
        deadline = time.monotonic() + 120
        while (
            waiting(balancer) < args.flood_jobs - 2 * args.slots
            or time.monotonic() - started < args.head_start
        ):
            if time.monotonic() > deadline or not flooding.is_alive():
                raise RuntimeError("the flood never filled the farm")
            time.sleep(0.05)
        relay = addresses.relay(balancer)
        beside = build(work / f"{tag}-small-beside", beside_files, relay.port, bin_dir, 4)
    finally:
        flooding.join(CLIENT_TIMEOUT_S)
    if failed:
        raise RuntimeError("the flood failed") from failed[0]
    return alone, beside, time.monotonic() - started


def spread(values: list[float], digits: int = 2) -> str:
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=0.5, help="one job's compile time")
    parser.add_argument("--small", type=int, default=12, help="files of the small build")
    parser.add_argument("--flood", type=int, default=192, help="jobs of the flood")
    parser.add_argument("--flood-jobs", type=int, default=64, help="the flood's -j")
    parser.add_argument(
        "--head-start",
        type=float,
        default=4.0,
        help="seconds the flood runs before the small build",
    )
    args = parser.parse_args()
    procs: list[Proc] = []
    addresses = Addresses()
    rows: dict[str, list[tuple[float, float, float]]] = {"on": [], "off": []}
    work = Path(tempfile.mkdtemp(prefix="distlb-bench-fair-"))
    work.chmod(0o755)
    if True:
        bin_dir = work / "toolchain" / "bin"
        write_vary_cc(bin_dir, args.seconds)
        server_tmp = work / "server-tmp"
        server_tmp.mkdir(mode=0o755)
        try:
            port, stats_port = free_ports(2)
            command = [str(DISTLB_SERVER), "--listen", "127.0.0.1", "--port", str(port),
                       "--stats-port", str(stats_port), "--jobs", str(args.slots),
                       "--compiler", "vary-cc", "--compiler", "gcc", "--offer-by-load", "off",
                       "--log-format", "json",
                       "--log-level", "warning", "--tmp-dir", str(server_tmp)]  # fmt: skip
            env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
            wait_port(start("server", command, work, procs, env), port)
            server = Server(port, stats_port)
            flags = ("--allow-compiler", "vary-cc", "--queue-timeout", "600", "--tail-hedge",
                     "0", "--hedge-min", "600")  # fmt: skip
            balancers = {
                mode: start_balancer(work, [server], procs, f"balancer-{mode}",
                                     ("--fair-share", mode, *flags))
                for mode in ("on", "off")
            }  # fmt: skip
            for round_ in range(args.rounds):
                order = ("on", "off") if round_ % 2 == 0 else ("off", "on")
                for mode in order:
                    tag = f"r{round_}-{mode}"
                    row = one_mode(work, balancers[mode], addresses, bin_dir, args, tag)
                    rows[mode].append(row)
                    print(f"round {round_ + 1} fair {mode}: small alone {row[0]:.2f} s, "
                          f"beside the flood {row[1]:.2f} s ({row[1] / row[0]:.2f} x), "
                          f"flood {row[2]:.2f} s", flush=True)  # fmt: skip
        finally:
            addresses.close()
            stop_all(procs)
            if os.environ.get("DISTLB_BENCH_KEEP"):
                print(f"kept {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)
    report(rows, args)


def report(rows: dict[str, list[tuple[float, float, float]]], args: argparse.Namespace) -> None:
    small = {mode: [beside / alone for alone, beside, _ in rows[mode]] for mode in rows}
    flood = [on[2] / off[2] for on, off in zip(rows["on"], rows["off"], strict=True)]
    fair, old = statistics.median(small["on"]), statistics.median(small["off"])
    flood_ratio = statistics.median(flood)
    lines = [
        "# Fair share (bench/fair.py)",
        "",
        f"{args.rounds} rounds; {args.slots} slots, {args.seconds} s a job on average "
        "(a stand-in compiler: 0.5-1.5 x that, by the source's checksum); "
        f"the small build: {args.small} files at -j4, each from a new address; the flood: "
        f"{args.flood} jobs at -j{args.flood_jobs} from 127.0.0.1, running "
        f"{args.head_start} s before the small build starts.",
        "",
        "| | fair share | longest waiting first (before) |",
        "|---|---:|---:|",
        f"| small build beside the flood / alone, median (spread) | {fair:.2f} "
        f"({spread(small['on'])}) | {old:.2f} ({spread(small['off'])}) |",
        f"| flood + small build, until both done: fair / before, median (spread) | "
        f"{flood_ratio:.3f} ({spread(flood, 3)}) | |",
        "",
        f"Goals: small <= {SMALL_GOAL} x with fair share: "
        f"{'met' if fair <= SMALL_GOAL else 'NOT met'}; flood within {FLOOD_GOAL:.0%}: "
        f"{'met' if abs(flood_ratio - 1) <= FLOOD_GOAL else 'NOT met'}.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "fair.md").write_text(text)


if __name__ == "__main__":
    main()
