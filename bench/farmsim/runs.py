"""One strategy's run (fresh servers and balancers or HAProxy, the builds, the numbers)
and the rounds of every strategy."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import TypedDict

from bench.harness import (
    HOST,
    Balancer,
    Proc,
    get_json,
    log_events,
    quantile_ms,
    start_balancer,
    stop_all,
)

from . import bounds
from .clients import client_env, run_builds, write_sources
from .model import Farm, Scenario, make_farm
from .processes import daemon_env, start_haproxy, start_servers, write_sim_cc

# What the distlb balancers did, from their /status totals.
BALANCER_TOTALS = ("turned_away", "retries", "hedges", "tail_hedges", "waited_for_faster")


class Outcome(TypedDict):
    strategy: str
    round: int
    makespan_s: float
    lower_bound_s: float
    ratio: float
    client_makespans_s: list[float]
    utilisation: float
    p50_ms: float
    p99_ms: float
    jobs: int
    ok: int
    local: int
    said_local: int
    failed: int
    unfinished: int  # jobs not run when the cap cut the builds off
    capped: bool
    background_jobs: int
    background_work_s: float
    background_turned_away: int
    servers_rejected_busy: int  # background turn-aways included
    load_average_1m: float  # this machine's, as the builds ended: 2 cores
    real_checked: int  # real gcc compiles through the strategy (sanity check)
    real_identical: int  # of those, objects identical to a local compile
    real_local: int  # of those, compiled locally after all (distcc said so)
    server_jobs: dict[str, int]
    balancer_totals: dict[str, int]  # distlb strategies: BALANCER_TOTALS, summed
    errors: dict[str, int]
    distcc_said: dict[str, int]


def run_strategy(
    strategy: str, round_index: int, scenario: Scenario, farm: Farm, work: Path, builds: list[Path]
) -> Outcome:
    """Fresh servers (and balancers or HAProxy) for one strategy; the builds; the numbers."""
    mine: list[Proc] = []
    tag = f"r{round_index}-{strategy}"
    balancers: list[Balancer] = []
    try:
        servers = start_servers(work, scenario, farm, mine, tag)
        slots = scenario.slots
        if strategy.startswith("distcc"):
            listed = " ".join(f"{HOST}:{s.port}/{slots}" for s in servers)
            prefix = "--randomize " if strategy == "distcc-randomize" else ""
            hosts = [prefix + listed] * scenario.clients
        elif strategy.startswith("haproxy"):
            port = start_haproxy(work, servers, slots, strategy == "haproxy-agent", mine, tag)
            hosts = [f"{HOST}:{port}/64"] * scenario.clients
        else:
            count = 2 if strategy == "distlb-x2" else 1
            balancers = [
                start_balancer(
                    work, servers, mine, f"{tag}-b{i}", scenario.balancer_args, daemon_env()
                )
                for i in range(count)
            ]
            hosts = [f"{HOST}:{balancers[k % count].port}/64" for k in range(scenario.clients)]
        home = work / f"{tag}-home"
        home.mkdir()
        client_bin = work / "client-bin"
        envs = [
            client_env(home, k, hosts[k], strategy, client_bin) for k in range(scenario.clients)
        ]
        for build in builds:
            for obj in [*build.glob("*.o"), *build.glob("real/*.o")]:
                obj.unlink()
        runs, load, wall_s = asyncio.run(run_builds(scenario, farm, builds, envs, servers))
        load_average = os.getloadavg()[0]
        rejected = 0
        for server in servers:
            counters = get_json(server.stats_port, "/status")["counters"]
            assert isinstance(counters, dict)
            rejected += int(counters["rejected_busy"])
        balancer_totals: Counter[str] = Counter()
        for balancer in balancers:
            totals = get_json(balancer.admin_port, "/status")["totals"]
            assert isinstance(totals, dict)
            for key in BALANCER_TOTALS:
                balancer_totals[key] += int(totals[key])
    finally:
        stop_all(mine)
    server_jobs: dict[str, int] = {}
    for index, server in enumerate(servers):
        done = [
            e
            for e in log_events(server.proc.log_path)
            if e.get("event") == "job_done"
            and e.get("compiler") == "sim-cc"
            and e.get("input") != "bg.c"
        ]
        server_jobs[f"s{index}@{server.speed}"] = len(done)
    jobs = [job for run in runs for job in run.jobs]
    started = [run.start_s for run in runs if run.jobs]
    ended = [run.end_s for run in runs if run.jobs]
    # The cap may also cut off the real compiles after a build: a build that finished
    # its jobs has its end, and only builds that did not are capped.
    capped = any(not run.end_s for run in runs)
    makespan = (max(ended) - min(started)) if started and not capped else wall_s
    capacity = bounds.capacity(scenario, farm)
    lower = bounds.lower_bound(scenario, farm, load.work_s)
    remote_work = sum(j["work_s"] for j in jobs if j["ok"] and not j["local"]) + load.work_s
    errors: Counter[str] = Counter()
    for run in runs:
        errors.update(run.errors)
    errors.update({f"background: {k}": v for k, v in load.errors.items()})
    said: Counter[str] = Counter()
    for run in runs:
        said.update(run.said)
    return Outcome(
        strategy=strategy,
        round=round_index,
        makespan_s=round(makespan, 2),
        lower_bound_s=round(lower, 2),
        ratio=round(makespan / lower, 3),
        # A build the cap cut off counts until the cap: at least that long.
        client_makespans_s=[
            round((run.end_s if run.end_s else wall_s) - run.start_s, 2) for run in runs
        ],
        utilisation=round(remote_work / (capacity * makespan), 3),
        p50_ms=quantile_ms([j["wall_s"] for j in jobs if j["ok"]], 0.50),
        p99_ms=quantile_ms([j["wall_s"] for j in jobs if j["ok"]], 0.99),
        jobs=scenario.clients * scenario.jobs,
        ok=sum(j["ok"] for j in jobs),
        local=sum(j["local"] for j in jobs),
        said_local=sum(j["said_local"] for j in jobs),
        failed=sum(not j["ok"] for j in jobs),
        unfinished=scenario.clients * scenario.jobs - len(jobs),
        capped=capped,
        background_jobs=load.jobs_done,
        background_work_s=round(load.work_s, 2),
        background_turned_away=load.turned_away,
        servers_rejected_busy=rejected,
        load_average_1m=round(load_average, 2),
        real_checked=sum(run.real_checked for run in runs),
        real_identical=sum(run.real_identical for run in runs),
        real_local=sum(run.real_local for run in runs),
        server_jobs=server_jobs,
        balancer_totals=dict(balancer_totals),
        errors=dict(errors.most_common(10)),
        distcc_said=dict(said.most_common(10)),
    )


def run(
    scenario: Scenario, strategies: tuple[str, ...], rounds: int, keep_logs: Path | None
) -> list[Outcome]:
    """Every strategy, ``rounds`` times, in alternating order; one outcome per run."""
    farm = make_farm(scenario)
    work = Path(tempfile.mkdtemp(prefix="distlb-farm-"))
    work.chmod(0o755)  # the unprivileged compile user must reach the job dirs inside
    outcomes: list[Outcome] = []
    try:
        write_sim_cc(work / "client-bin", 1.0, "local")  # the clients' own, for local fallback
        builds = write_sources(work, farm)
        for round_index in range(rounds):
            order = strategies if round_index % 2 == 0 else strategies[::-1]
            for strategy in order:
                outcome = run_strategy(strategy, round_index, scenario, farm, work, builds)
                outcomes.append(outcome)
                print(
                    f"round {round_index} {strategy:>16}: makespan {outcome['makespan_s']:.2f} s "
                    f"(x{outcome['ratio']:.2f} of {outcome['lower_bound_s']:.2f}) "
                    f"local={outcome['local']} failed={outcome['failed']} "
                    f"rejected={outcome['servers_rejected_busy']} "
                    f"real={outcome['real_identical']}/{outcome['real_checked']} "
                    f"real_local={outcome['real_local']} "
                    f"{outcome['balancer_totals'] or ''} "
                    f"{outcome['errors'] or ''}",
                    file=sys.stderr,
                )
        return outcomes
    finally:
        if keep_logs is not None:
            keep_logs.mkdir(parents=True, exist_ok=True)
            for kept in [*work.glob("*.log"), *work.glob("*.cfg")]:
                shutil.copy(kept, keep_logs)
        shutil.rmtree(work, ignore_errors=True)
