"""A simulated distcc farm: plain distcc, HAProxy and distlb-balancer, same builds.

N distlb-servers whose allowlisted compiler ``sim-cc`` is a shell script: ``-E`` is
``cat``; ``-c`` sleeps for the input's size divided by that server's speed (0.5 to 2.0)
and writes a tiny object. Some servers carry background load that comes and goes
(sim jobs sent straight to them). K clients, started at staggered times, each build M
files of lognormal sizes at ``-j J`` through Debian's real distcc client, with
DISTCC_FALLBACK on (a job that cannot be placed runs sim-cc locally, speed 1.0, at
most two at a time per client). Every strategy sees the same seed: the same servers,
speeds, files, start times and background schedule. Prints a markdown table of
makespans against a lower bound and writes bench/results/farm.{md,json} and
bench/results/farm_makespan.png.

    .venv/bin/python -m bench.farm [--quick | --light] [--rounds R] [--strategy S]...
                                   [--keep-logs DIR] [--balancer-arg ARG]...
                                   [--server-arg ARG]...
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

# The benchmark is in bench/farmsim/, a module per role (see farmsim/__init__.py). Here:
# what main needs and what tests/unit/test_farm_references.py uses; any other name this
# file defined before the split is looked up in farmsim's modules (see __getattr__).
from bench.farmsim import bounds, clients, model, processes, report, runs
from bench.farmsim.bounds import ideal_earliest_finish, ideal_greedy
from bench.farmsim.model import FULL, LIGHT, QUICK, STRATEGIES, Farm, Scenario, make_farm
from bench.farmsim.report import table, write_results
from bench.farmsim.runs import run
from bench.harness import HAPROXY

__all__ = ["Farm", "Scenario", "ideal_earliest_finish", "ideal_greedy", "main"]


def __getattr__(name: str) -> object:
    """``farm.NAME`` for the rest of what farm.py defined when it was one file
    (``farm.write_sources``, ``farm.start_servers``, ``farm.RESULTS_DIR``, ...)."""
    for module in (model, bounds, processes, clients, runs, report):
        if not name.startswith("_") and name in vars(module):
            return vars(module)[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    # SIGTERM unwinds like Ctrl-C, through the finally blocks that stop what we started.
    signal.signal(signal.SIGTERM, _interrupt)
    parser = argparse.ArgumentParser(
        prog="python -m bench.farm", description=(__doc__ or "").splitlines()[0]
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="8 servers x 4, 6 clients x 100")
    mode.add_argument(
        "--light", action="store_true", help="8 servers x 4, 4 clients x 60 starting 1 s apart"
    )
    parser.add_argument(
        "--strategy", action="append", choices=STRATEGIES, help="run only these (repeatable)"
    )
    parser.add_argument("--seed", type=int, help="override the scenario's seed")
    parser.add_argument(
        "--rounds",
        type=int,
        help="runs of every strategy (default: 1 with --quick or --light, else 3)",
    )
    parser.add_argument("--keep-logs", type=Path, help="copy every process's log here")
    parser.add_argument(
        "--balancer-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="pass ARG to every distlb-balancer, for experiments (repeatable; "
        "--balancer-arg=--tail-hedge --balancer-arg=0)",
    )
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="pass ARG to every distlb-server, for experiments (repeatable; "
        "--server-arg=--sandbox --server-arg=none)",
    )
    args = parser.parse_args()
    scenario = QUICK if args.quick else LIGHT if args.light else FULL
    if args.seed is not None:
        scenario = Scenario(**{**asdict(scenario), "seed": args.seed})
    if args.balancer_arg:
        scenario = Scenario(**{**asdict(scenario), "balancer_args": tuple(args.balancer_arg)})
    if args.server_arg:
        scenario = Scenario(**{**asdict(scenario), "server_args": tuple(args.server_arg)})
    strategies = tuple(args.strategy) if args.strategy else STRATEGIES
    rounds = args.rounds if args.rounds is not None else (1 if args.quick or args.light else 3)
    if rounds < 1:
        parser.error("--rounds must be at least 1")
    for tool in ("distcc", "timeout"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not on PATH")
    if not HAPROXY.exists() and any(s.startswith("haproxy") for s in strategies):
        parser.error(f"{HAPROXY} is missing")
    started = time.monotonic()
    outcomes = run(scenario, strategies, rounds, args.keep_logs)
    took_s = round(time.monotonic() - started, 1)
    farm = make_farm(scenario)
    text = table(scenario, farm, outcomes, rounds)
    print(text)
    print(f"(took {took_s} s)")
    mode_name = "--quick" if args.quick else "--light" if args.light else "full"
    write_results(scenario, farm, outcomes, text, took_s, mode_name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
