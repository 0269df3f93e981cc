"""distlb-server against Debian's distccd, both driven by the real distcc client.

Builds a generated C project through each server (rounds alternate which goes first),
then times one-line compiles run one after another to get the per-job overhead. A
second distlb-server with --sandbox none runs alongside, so the sandbox's own cost per
job is measured in the same run; the argument judge's cost is timed in-process. Prints
a table of ratios and writes it, with the raw numbers, to bench/results/.

    .venv/bin/python -m bench.server_vs_distccd [--jobs N] [--rounds R] [--files F] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import TypedDict

from bench.harness import Proc, free_ports, start, stop_all, wait_ready

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
DISTLB_SERVER = ROOT / ".venv" / "bin" / "distlb-server"
SERIES = {"plain": "", "lzo": ",lzo"}
UNSANDBOXED = "distlb-no-sandbox"
GOAL_RATIO = 1.10  # the project goal: distlb build time within 10% of distccd
LATENCY_JOBS = 40
CLIENT_TIMEOUT_S = 120  # the `timeout` wrapped around every distcc run
PHASE_LIMIT_S = 1800.0  # each load loop gives up (loudly) after this long
UNITS_PER_FILE = 7  # about 45 lines of C each

HEADER = """#ifndef COMMON_H
#define COMMON_H
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define NAME_LEN 32
#endif
"""

UNIT = """
struct rec_{n} {{ int id; double weight; char name[NAME_LEN]; struct rec_{n} *next; }};

static struct rec_{n} *rec_{n}_push(struct rec_{n} *head, int id, const char *name) {{
    struct rec_{n} *r = malloc(sizeof *r);
    if (r == NULL)
        return head;
    r->id = id;
    r->weight = id * {k}.5 - (id % 7) * 0.25;
    strncpy(r->name, name, sizeof r->name - 1);
    r->name[sizeof r->name - 1] = '\\0';
    r->next = head;
    return r;
}}

static int rec_{n}_cmp(const void *a, const void *b) {{
    const struct rec_{n} *x = *(const struct rec_{n} *const *)a;
    const struct rec_{n} *y = *(const struct rec_{n} *const *)b;
    return (x->weight > y->weight) - (x->weight < y->weight);
}}

long rec_{n}_run(int count) {{
    struct rec_{n} *head = NULL, **items;
    char buf[NAME_LEN];
    long total = 0;
    int i, used = 0;
    for (i = 0; i < count; i++) {{
        snprintf(buf, sizeof buf, "item-%d-{k}", i);
        head = rec_{n}_push(head, i, buf);
    }}
    items = calloc((size_t)count, sizeof *items);
    for (struct rec_{n} *r = head; r != NULL && items != NULL; r = r->next)
        items[used++] = r;
    if (items != NULL)
        qsort(items, (size_t)used, sizeof *items, rec_{n}_cmp);
    for (i = 0; i < used; i++)
        total += (long)(strlen(items[i]->name) * {mod}u) + items[i]->id;
    while (head != NULL) {{
        struct rec_{n} *next = head->next;
        free(head);
        head = next;
    }}
    free(items);
    return total;
}}
"""

MAKEFILE = """OUT ?= out
OBJS := $(patsubst src/%.c,$(OUT)/%.o,$(wildcard src/*.c))
all: $(OBJS)
$(OUT)/%.o: src/%.c src/common.h
\t$(CC) -O2 -Wall -c $< -o $@
"""


def write_project(project: Path, files: int) -> list[str]:
    """A C project of ``files`` sources (a few hundred lines each); returns their stems."""
    (project / "src").mkdir(parents=True)
    (project / "src" / "common.h").write_text(HEADER)
    (project / "Makefile").write_text(MAKEFILE)
    stems = [f"mod{index:02d}" for index in range(files)]
    for index, stem in enumerate(stems):
        units = []
        for unit in range(UNITS_PER_FILE):
            k = index * UNITS_PER_FILE + unit
            units.append(UNIT.format(n=f"{index}_{unit}", k=k, mod=1000 + k))
        calls = " + ".join(f"rec_{index}_{u}_run(n)" for u in range(UNITS_PER_FILE))
        entry = f"\nlong {stem}_total(int n)\n{{\n    return {calls};\n}}\n"
        (project / "src" / f"{stem}.c").write_text('#include "common.h"\n' + "".join(units) + entry)
    (project / "one.c").write_text("int one(int x) { return x + 1; }\n")
    return stems


def check_objects(out: Path, stems: list[str], reference: dict[str, str], what: str) -> None:
    """Every object exists, is ELF, and matches the first build's (fail loudly otherwise)."""
    for stem in stems:
        obj = out / f"{stem}.o"
        data = obj.read_bytes() if obj.is_file() else b""
        if not data.startswith(b"\x7fELF"):
            raise RuntimeError(f"{what}: {obj} missing or not an object")
        digest = hashlib.sha256(data).hexdigest()
        if reference.setdefault(stem, digest) != digest:
            raise RuntimeError(f"{what}: {obj.name} differs from the first build's")


def timed(command: list[str], project: Path, env: dict[str, str]) -> float:
    """Run ``command`` in ``project``; its wall time in seconds. Raises if it fails."""
    started = time.monotonic()
    result = subprocess.run(command, cwd=project, env=env, capture_output=True, timeout=600)
    if result.returncode != 0:
        hosts = env["DISTCC_HOSTS"]
        raise RuntimeError(
            f"{command} ({hosts}) exited {result.returncode}:\n{result.stderr.decode()}"
        )
    return time.monotonic() - started


def build(project: Path, env: dict[str, str], jobs: int) -> tuple[float, Path]:
    out = Path(tempfile.mkdtemp(prefix="out-", dir=project))
    compiler = f"CC=timeout {CLIENT_TIMEOUT_S} distcc gcc"
    return timed(["make", "-s", f"-j{jobs}", f"OUT={out.name}", compiler], project, env), out


def one_job(project: Path, env: dict[str, str]) -> float:
    (project / "one.o").unlink(missing_ok=True)
    seconds = timed(
        ["timeout", str(CLIENT_TIMEOUT_S), "distcc", "gcc", "-c", "one.c"], project, env
    )
    if not (project / "one.o").is_file():
        raise RuntimeError(f"one.o missing after a compile via {env['DISTCC_HOSTS']}")
    return seconds


Servers = dict[str, tuple[Proc, int]]


def start_servers(work: Path, jobs: int, servers: Servers) -> None:
    """Start distlb-server and distccd on free loopback ports into ``servers`` (so the
    caller can stop whatever started), then wait until both accept connections."""
    distlb_port, stats_port, bare_port, bare_stats, distccd_port = free_ports(5)
    distlb_tmp, distccd_tmp = work / "distlb-tmp", work / "distccd-tmp"
    bare_tmp = work / "bare-tmp"
    bare_tmp.mkdir()
    bare_tmp.chmod(0o755)
    # As root both run compilers unprivileged: distlb chowns each job dir it makes in
    # --tmp-dir (which must be traversable); distccd writes straight into $TMPDIR.
    distlb_tmp.mkdir()
    distlb_tmp.chmod(0o755)
    distccd_tmp.mkdir()
    distccd_tmp.chmod(0o1777)
    distlb = [str(DISTLB_SERVER), "--listen", "127.0.0.1", "--port", str(distlb_port)]
    distlb += ["--stats-port", str(stats_port), "--jobs", str(jobs), "--log-format", "json"]
    distlb += ["--tmp-dir", str(distlb_tmp), "--offer-by-load", "off"]
    distccd = ["distccd", "--daemon", "--no-detach", "--listen", "127.0.0.1"]
    distccd += ["--port", str(distccd_port), "--jobs", str(jobs), "--allow", "127.0.0.1"]
    distccd += ["--log-stderr", "--log-level=warning"]
    if os.geteuid() == 0:
        users = {entry.pw_name for entry in pwd.getpwall()}
        distccd += ["--user", next(u for u in ("distcc", "distccd", "nobody") if u in users)]
    bare = [str(DISTLB_SERVER), "--listen", "127.0.0.1", "--port", str(bare_port)]
    bare += ["--stats-port", str(bare_stats), "--jobs", str(jobs), "--log-format", "json"]
    bare += ["--tmp-dir", str(bare_tmp), "--sandbox", "none", "--offer-by-load", "off"]
    plan = [("distlb", distlb, distlb_port, distlb_tmp)]
    plan.append((UNSANDBOXED, bare, bare_port, bare_tmp))
    plan.append(("distccd", distccd, distccd_port, distccd_tmp))
    procs: list[Proc] = []
    for name, command, port, tmp in plan:
        env = dict(os.environ, TMPDIR=str(tmp))
        servers[name] = (start(name, command, work, procs, env), port)
    for proc, port in servers.values():
        wait_ready(proc, port)


def distlb_outcomes(log_path: Path) -> dict[str, int]:
    outcomes: Counter[str] = Counter()
    for line in log_path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict) and event.get("event") == "job_done":
                outcomes[str(event.get("outcome"))] += 1
    return dict(outcomes)


JUDGED = [
    ["x86_64-linux-gnu-gcc", "-c", "one.c", "-o", "one.o"],
    ["cc", "-O2", "-g", "-DNDEBUG", "-fPIC", "-Wall", "-Wextra", "-std=gnu11",
     "-o", "CMakeFiles/lib.dir/src/a.c.o", "-c", "/home/dev/project/src/a.c"],
    ["gcc", "-O2", "-flto=auto", "-ffat-lto-objects", "-fexceptions", "-g",
     "-grecord-gcc-switches", "-pipe", "-Wall", "-Werror=format-security",
     "-fstack-protector-strong", "-m64", "-march=x86-64-v2", "-mtune=generic",
     "-fasynchronous-unwind-tables", "-fstack-clash-protection", "-fcf-protection",
     "-c", "x.c", "-o", "x.o"],
]  # fmt: skip
JUDGE_REPEATS = 2000


def judge_cost_us() -> float:
    """The argument judge's time per command line, in microseconds (median of rounds)."""
    from daemon.judge import Judge

    judge = Judge()
    rounds = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(JUDGE_REPEATS):
            for argv in JUDGED:
                judge.judge(argv)
        rounds.append((time.perf_counter() - started) / (JUDGE_REPEATS * len(JUDGED)))
    return round(statistics.median(rounds) * 1e6, 1)


class Raw(TypedDict):
    judge_us: float
    jobs: int
    rounds: int
    files: int
    latency_jobs: int
    distlb_outcomes: dict[str, int]
    build_wall_s: dict[str, dict[str, list[float]]]
    job_latency_s: dict[str, dict[str, list[float]]]


def run(jobs: int, rounds: int, files: int) -> Raw:
    work = Path(tempfile.mkdtemp(prefix="distlb-bench-"))
    work.chmod(0o755)  # the unprivileged compile user must reach the job dirs inside
    servers: Servers = {}
    try:
        project = work / "project"
        stems = write_project(project, files)
        start_servers(work, jobs, servers)
        names = list(servers)
        reference: dict[str, str] = {}

        def env_for(name: str, spec: str) -> dict[str, str]:
            """A client environment with its own fresh DISTCC_DIR."""
            env = {k: v for k, v in os.environ.items() if not k.startswith("DISTCC_")}
            env["DISTCC_DIR"] = tempfile.mkdtemp(prefix="distcc-dir-", dir=work)
            env["DISTCC_HOSTS"] = f"127.0.0.1:{servers[name][1]}/{jobs}{spec}"
            env["DISTCC_FALLBACK"] = "0"
            return env

        for name in names:  # warm-up, not counted: page cache, compiler binaries
            _, out = build(project, env_for(name, ""), jobs)
            check_objects(out, stems, reference, f"warm-up via {name}")
        walls: dict[str, dict[str, list[float]]] = {s: {n: [] for n in names} for s in SERIES}
        deadline = time.monotonic() + PHASE_LIMIT_S
        for round_index in range(rounds):
            order = names if round_index % 2 == 0 else names[::-1]
            for series, spec in SERIES.items():
                for name in order:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"builds took longer than {PHASE_LIMIT_S}s")
                    seconds, out = build(project, env_for(name, spec), jobs)
                    check_objects(out, stems, reference, f"round {round_index} {series} {name}")
                    walls[series][name].append(round(seconds, 4))
                    shutil.rmtree(out)
        latency: dict[str, dict[str, list[float]]] = {s: {n: [] for n in names} for s in SERIES}
        deadline = time.monotonic() + PHASE_LIMIT_S
        for series, spec in SERIES.items():
            envs = {name: env_for(name, spec) for name in names}
            for index in range(LATENCY_JOBS):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"one-line jobs took longer than {PHASE_LIMIT_S}s")
                for name in names if index % 2 == 0 else names[::-1]:
                    latency[series][name].append(round(one_job(project, envs[name]), 4))
        return Raw(
            judge_us=judge_cost_us(),
            jobs=jobs,
            rounds=rounds,
            files=files,
            latency_jobs=LATENCY_JOBS,
            distlb_outcomes=distlb_outcomes(servers["distlb"][0].log_path),
            build_wall_s=walls,
            job_latency_s=latency,
        )
    finally:
        stop_all([proc for proc, _ in servers.values()])
        shutil.rmtree(work, ignore_errors=True)


def summarize(raw: Raw) -> list[dict[str, str | float]]:
    rows: list[dict[str, str | float]] = []
    for series in SERIES:
        walls = raw["build_wall_s"][series]
        wall = {n: statistics.median(v) for n, v in walls.items()}
        ms = {n: statistics.median(v) * 1000 for n, v in raw["job_latency_s"][series].items()}
        # Each round's builds ran back to back, so their ratio cancels what drifts
        # between rounds (the page cache, the disk, other load).
        paired = [a / b for a, b in zip(walls["distlb"], walls["distccd"], strict=True)]
        rows.append(
            {
                "series": series,
                "distlb_s": round(wall["distlb"], 3),
                "distccd_s": round(wall["distccd"], 3),
                "ratio": round(wall["distlb"] / wall["distccd"], 3),
                "paired_ratio": round(statistics.median(paired), 3),
                "paired_min": round(min(paired), 3),
                "paired_max": round(max(paired), 3),
                "distlb_job_ms": round(ms["distlb"], 1),
                "distccd_job_ms": round(ms["distccd"], 1),
                "added_job_ms": round(ms["distlb"] - ms["distccd"], 1),
                "sandbox_job_ms": round(ms["distlb"] - ms[UNSANDBOXED], 1),
                "no_sandbox_ratio": round(wall[UNSANDBOXED] / wall["distccd"], 3),
            }
        )
    return rows


def table(raw: Raw, rows: list[dict[str, str | float]]) -> str:
    lines = [
        "| series | distlb s | distccd s | ratio | ratio per round (range) | ratio, no sandbox "
        "| distlb ms/job | distccd ms/job | added ms | of which the sandbox |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['series']} | {r['distlb_s']:.3f} | {r['distccd_s']:.3f} | {r['ratio']:.3f} "
            f"| {r['paired_ratio']:.3f} ({r['paired_min']:.2f}-{r['paired_max']:.2f}) "
            f"| {r['no_sandbox_ratio']:.3f} | {r['distlb_job_ms']:.1f} "
            f"| {r['distccd_job_ms']:.1f} | {r['added_job_ms']:+.1f} "
            f"| {r['sandbox_job_ms']:+.1f} |"
        )
    lines.append("")
    lines.append(
        f"N={raw['jobs']} jobs, F={raw['files']} files, R={raw['rounds']} rounds, "
        f"K={raw['latency_jobs']} one-line jobs per server and series; medians (ratio: of "
        f"the medians; per round: the median of each round's distlb/distccd, its range "
        f"in brackets); goal: ratio <= {GOAL_RATIO:.2f}. "
        f"distlb job outcomes: {raw['distlb_outcomes']}. "
        f"The judge: {raw['judge_us']} us per command line (median of "
        f"{JUDGE_REPEATS} x {len(JUDGED)} lines)."
    )
    return "\n".join(lines)


def write_results(raw: Raw, rows: list[dict[str, str | float]], text: str, took_s: float) -> None:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    document = {"rows": rows, "goal_ratio": GOAL_RATIO, "took_s": took_s, "raw": raw}
    (RESULTS_DIR / "server_vs_distccd.json").write_text(json.dumps(document, indent=1) + "\n")
    raw_lines = []
    for label, data in (("build wall s", raw["build_wall_s"]), ("job s", raw["job_latency_s"])):
        for series, per_server in data.items():
            raw_lines += [f"- {label}, {series}, {name}: {v}" for name, v in per_server.items()]
    markdown = f"# distlb-server vs distccd\n\n{text}\n\nTook {took_s} s.\n\n## Raw\n\n"
    (RESULTS_DIR / "server_vs_distccd.md").write_text(markdown + "\n".join(raw_lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.server_vs_distccd", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="N: slots, -jN")
    parser.add_argument("--rounds", type=int, default=5, help="R: builds per server and series")
    parser.add_argument("--files", type=int, default=24, help="F: C files in the project")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 12 files")
    args = parser.parse_args()
    rounds, files = (3, 12) if args.quick else (args.rounds, args.files)
    if min(args.jobs, rounds, files) < 1:
        parser.error("--jobs, --rounds and --files must be at least 1")
    started = time.monotonic()
    raw = run(args.jobs, rounds, files)
    took_s = round(time.monotonic() - started, 1)
    rows = summarize(raw)
    text = table(raw, rows)
    print(text)
    print(f"(took {took_s} s)")
    write_results(raw, rows, text, took_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
