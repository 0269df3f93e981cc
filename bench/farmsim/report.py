"""What the benchmark prints and writes: the markdown table with its goals and
references, and bench/results/farm.{md,json} and farm_makespan.png."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from . import ROOT
from .bounds import ideal_earliest_finish, ideal_greedy
from .clients import REAL_COMPILES
from .model import JOB_MAX_S, JOB_MEDIAN_S, JOB_MIN_S, STRATEGIES, Farm, Scenario
from .runs import Outcome

RESULTS_DIR = ROOT / "bench" / "results"
GOAL_LOWER_BOUND_RATIO = 1.15
GOAL_TWO_BALANCERS = 1.05


def medians(outcomes: list[Outcome]) -> tuple[list[Outcome], dict[str, list[float]]]:
    """Per strategy, the run with the median makespan (the lower middle of an even
    count), and every run's makespan."""
    chosen, spread = [], {}
    for strategy in STRATEGIES:
        runs = sorted(
            (o for o in outcomes if o["strategy"] == strategy), key=lambda o: o["makespan_s"]
        )
        if runs:
            chosen.append(runs[(len(runs) - 1) // 2])
            spread[strategy] = [o["makespan_s"] for o in runs]
    return chosen, spread


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def goals(outcomes: list[Outcome]) -> list[str]:
    by = {o["strategy"]: o for o in outcomes}
    lines = []
    if "distlb" in by:
        one = by["distlb"]
        lines.append(
            f"- distlb makespan <= {GOAL_LOWER_BOUND_RATIO} x lower bound: "
            f"{verdict(one['ratio'] <= GOAL_LOWER_BOUND_RATIO)} (x{one['ratio']:.3f})"
        )
        others = [o for o in outcomes if not o["strategy"].startswith("distlb")]
        if others:
            best = min(others, key=lambda o: o["makespan_s"])
            lines.append(
                f"- distlb ahead of plain distcc and HAProxy: "
                f"{verdict(all(one['makespan_s'] < o['makespan_s'] for o in others))} "
                f"(best of those: {best['strategy']} {best['makespan_s']:.2f} s vs "
                f"{one['makespan_s']:.2f} s)"
            )
        if "distlb-x2" in by:
            two = by["distlb-x2"]["makespan_s"] / one["makespan_s"]
            lines.append(
                f"- two balancers within {round((GOAL_TWO_BALANCERS - 1) * 100)}% of one: "
                f"{verdict(two <= GOAL_TWO_BALANCERS)} (x{two:.3f})"
            )
    return lines


def capped_note(outcome: Outcome) -> str:
    if not outcome["capped"]:
        return ""
    return f" (CAPPED: {outcome['unfinished']} jobs not run)"


def table(scenario: Scenario, farm: Farm, all_outcomes: list[Outcome], rounds: int) -> str:
    outcomes, spread = medians(all_outcomes)
    lines = [
        "| strategy | makespan s | x lower bound | all rounds s | per-client makespan s "
        "| utilisation | p50 ms | p99 ms | local | failed |",
        "|---|---:|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for o in outcomes:
        every = " ".join(f"{m:.1f}" for m in spread[o["strategy"]])
        clients = " ".join(f"{s:.1f}" for s in o["client_makespans_s"])
        lines.append(
            f"| {o['strategy']} | {o['makespan_s']:.2f} | {o['ratio']:.2f} | {every} | {clients} "
            f"| {o['utilisation']:.2f} | {o['p50_ms']:.0f} | {o['p99_ms']:.0f} "
            f"| {o['local']} | {o['failed']}{capped_note(o)} |"
        )
    lines.append("")
    lines += goals(outcomes)
    ideal_s, ideal_bound_s = ideal_greedy(scenario, farm)
    oracle_s = ideal_earliest_finish(scenario, farm)
    lines.append(
        f"- references (same starts and -j, no overhead, no background load; lower bound "
        f"of that load {ideal_bound_s:.2f} s, where each row's bound also counts the "
        f"background work done in that run): a scheduler that knows every speed and takes "
        f"the fastest free slot, {ideal_s:.2f} s (x{ideal_s / ideal_bound_s:.2f}); an oracle "
        f"that also knows every job's length and waits for a fast slot when that finishes "
        f"sooner, {oracle_s:.2f} s (x{oracle_s / ideal_bound_s:.2f})"
    )
    checked = sum(o["real_checked"] for o in all_outcomes)
    identical = sum(o["real_identical"] for o in all_outcomes)
    local = sum(o["real_local"] for o in all_outcomes)
    lines.append(
        f"- sanity check: {identical} of {checked} real gcc compiles through the strategies "
        f"({REAL_COMPILES} per client and run, after its build) gave objects identical to "
        f"a local compile; {local} of them were compiled locally after all"
    )
    capacity = sum(scenario.slots * s for s in farm.speeds)
    work = sum(sum(w) for w in farm.job_work_s)
    lines.append("")
    lines.append(
        f"{scenario.servers} distlb-servers x {scenario.slots} slots, speeds "
        f"{min(farm.speeds)}..{max(farm.speeds)} (capacity {capacity:.1f} speed-slots); "
        f"background load on {len(farm.loaded)} servers (half their slots, "
        f"{scenario.load_on_s:.0f} s on / {scenario.load_off_s:.0f} s off); "
        f"{scenario.clients} clients x {scenario.jobs} jobs at -j{scenario.parallel}, "
        f"starting {scenario.stagger_s:g} s apart; {work:.0f} s of work at speed 1.0, "
        f"jobs {JOB_MIN_S * scenario.work_scale:g}..{JOB_MAX_S * scenario.work_scale:g} s "
        f"(lognormal, median {JOB_MEDIAN_S * scenario.work_scale:g} s); seed "
        f"{scenario.seed}; {rounds} round(s), strategy order alternating; each row is the run "
        f"with the median makespan (the better middle one of an even count). Lower bound: "
        f"max(client work + "
        f"background work done / capacity, longest job at the fastest speed); makespan "
        f"from the first client's start to the last one's end. Utilisation: speed-1.0 work "
        f"done on the farm (client and background) / (capacity x makespan). Latency: each "
        f"distcc run's wall time. Local: jobs distcc compiled locally (fallback)."
    )
    return "\n".join(lines)


def plot(outcomes: list[Outcome], path: Path) -> None:
    import matplotlib  # only the plot needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [o["strategy"] for o in outcomes]
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=80)
    xs = list(range(len(outcomes)))
    ax.bar(xs, [o["makespan_s"] for o in outcomes], color="#7aa6c2", label="total makespan")
    for x, o in zip(xs, outcomes, strict=True):
        ax.scatter(
            [x] * len(o["client_makespans_s"]), o["client_makespans_s"], s=12, color="#333333",
            zorder=3, label="per client" if x == 0 else None,
        )  # fmt: skip
        ax.hlines(o["lower_bound_s"], x - 0.4, x + 0.4, colors="#c0392b", linewidth=2,
                  label="lower bound" if x == 0 else "")  # fmt: skip
        if o["capped"]:  # cut off: at least this long
            ax.text(x, o["makespan_s"], "capped", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(xs, names, rotation=20, fontsize=8)
    ax.set_ylabel("seconds")
    ax.set_title("Simulated farm: build makespan by strategy", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def results_markdown(mode: str, text: str, took_s: float, outcomes: list[Outcome]) -> str:
    """bench/results/farm.md: the table, then a line of raw facts per run (what distcc
    said, and everything else, is in farm.json)."""
    raw_lines = [
        f"- round {o['round']} {o['strategy']}: makespan {o['makespan_s']} s; "
        f"jobs per server {o['server_jobs']}; background jobs "
        f"{o['background_jobs']} ({o['background_work_s']} s work, "
        f"{o['background_turned_away']} turned away); servers rejected busy "
        f"{o['servers_rejected_busy']}; load average {o['load_average_1m']}; "
        f"distcc warned of {o['said_local']} local runs"
        + (f"; balancers {o['balancer_totals']}" if o["balancer_totals"] else "")
        + (f"; errors {o['errors']}" if o["errors"] else "")
        for o in outcomes
    ]
    return (
        f"# Simulated farm ({mode})\n\n{text}\n\nTook {took_s} s.\n\n"
        "## Raw\n\n" + "\n".join(raw_lines) + "\n"
    )


def write_results(
    scenario: Scenario, farm: Farm, outcomes: list[Outcome], text: str, took_s: float, mode: str
) -> None:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    document = {
        "mode": mode,
        "scenario": asdict(scenario),
        "farm": {k: v for k, v in asdict(farm).items() if k != "job_work_s"},
        "job_work_s": farm.job_work_s,
        "goals": {"lower_bound_ratio": GOAL_LOWER_BOUND_RATIO, "two_balancers": GOAL_TWO_BALANCERS},
        "took_s": took_s,
        "outcomes": outcomes,
    }
    (RESULTS_DIR / "farm.json").write_text(json.dumps(document, indent=1) + "\n")
    markdown = results_markdown(mode, text, took_s, outcomes)
    (RESULTS_DIR / "farm.md").write_text(markdown)
    plot(medians(outcomes)[0], RESULTS_DIR / "farm_makespan.png")
