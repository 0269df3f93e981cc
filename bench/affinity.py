"""The affinity pick's cost against the farm's size: the roster's ring
(balancer/routing/roster.py) against the same choice computed from scratch over every backend
(balancer/routing/picker.py), in one run, for N caching backends in rotation.

    .venv/bin/python -m bench.affinity [--rounds 3]

Prints per N the median µs per pick of each (and the spread over the rounds).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

from balancer.routing.backend import Backend, BackendReport, BackendSpec
from balancer.routing.picker import pick
from balancer.routing.roster import Roster

SIZES = (2, 50, 500)
PICKS = 20000
SCRATCH_PICKS = 1000


def farm(count: int) -> tuple[Roster, list[Backend]]:
    roster = Roster()
    backends = [Backend(BackendSpec.parse(f"h{i}:3632")) for i in range(count)]
    for backend in backends:
        backend.on_change = roster.changed
    roster.rebuild(backends)
    for i, backend in enumerate(backends):
        backend.on_report(BackendReport(slots=16, busy=i % 8, result_cache=True))
        backend.on_success()
        backend.on_success()
        for _ in range(5):
            backend.record_latency(0.5 + (i % 5) / 10)
    return roster, backends


def per_pick_us(count: int) -> tuple[float, float]:
    roster, backends = farm(count)
    rng = random.Random(1)
    now = time.monotonic()
    jobs = [str(i).encode() for i in range(PICKS)]
    started = time.perf_counter()
    for job in jobs:
        roster.pick(rng, now, (), job)
    ours = (time.perf_counter() - started) / PICKS * 1e6
    started = time.perf_counter()
    for job in jobs[:SCRATCH_PICKS]:
        pick(backends, rng, now, (), job)
    scratch = (time.perf_counter() - started) / SCRATCH_PICKS * 1e6
    return ours, scratch


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.affinity", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print("| caching backends | roster µs/pick (rounds) | from scratch µs/pick | ratio |")
    print("|---:|---|---:|---:|")
    for count in SIZES:
        runs = [per_pick_us(count) for _ in range(args.rounds)]
        ours = [r[0] for r in runs]
        scratch = statistics.median(r[1] for r in runs)
        print(f"| {count} | {statistics.median(ours):.1f} ({min(ours):.1f}-{max(ours):.1f}) "
              f"| {scratch:.1f} | {scratch / statistics.median(ours):.0f}x |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
