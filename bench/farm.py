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

    .venv/bin/python bench/farm.py [--quick | --light] [--rounds R] [--strategy S]...
                                   [--keep-logs DIR] [--balancer-arg ARG]...
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import heapq
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypedDict

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness import (  # noqa: E402
    HOST,
    READY_TIMEOUT_S,
    Proc,
    free_ports,
    get_json,
    log_events,
    quantile_ms,
    start,
    stop_all,
    wait_ready,
)

from client import ClientError, TurnedAway, compile_remote  # noqa: E402
from tests.support.projects import CFLAGS, local_object, sources, write_c_project  # noqa: E402
from wire import Request  # noqa: E402

RESULTS_DIR = ROOT / "bench" / "results"
DISTLB_SERVER = ROOT / ".venv" / "bin" / "distlb-server"
DISTLB_BALANCER = ROOT / ".venv" / "bin" / "distlb-balancer"
HAPROXY = Path("/usr/sbin/haproxy")
STRATEGIES = ("distcc", "distcc-randomize", "haproxy", "haproxy-agent", "distlb", "distlb-x2")
BALANCED = ("haproxy", "haproxy-agent", "distlb", "distlb-x2")  # one address per client
GOAL_LOWER_BOUND_RATIO = 1.15
GOAL_TWO_BALANCERS = 1.05
BYTES_PER_S = 100_000  # sim-cc at speed 1.0 takes one second per 100 kB of input
JOB_MIN_S, JOB_MAX_S = 0.05, 2.0  # a job's work, in seconds at speed 1.0
JOB_MEDIAN_S, JOB_SIGMA = 0.8, 0.7  # lognormal, clipped to the range above
LOCAL_SLOTS = 2  # distcc's --localslots on every client: local compiles at once
CLIENT_TIMEOUT_S = 300  # the `timeout` around every distcc run
# The clients run niced: on a real farm they are other machines, so the farm's daemons
# (servers, balancers, HAProxy) must not queue for CPU behind a hundred distcc clients.
CLIENT_NICE = 10
REAL_COMPILES = 3  # per client and run, after its build: real gcc, checked against local
BACKGROUND_JOB_S = 1.0  # longest single background job, wall seconds on its server
BACKGROUND_RETRY_S = 0.2  # after a turn-away (the server was full)
# What Debian's distcc 3.4 prints (as warnings) when it compiles a job locally after
# all: it could not place it, or the remote compile failed (a closed connection).
# What the distlb balancers did, from their /status totals.
BALANCER_TOTALS = ("turned_away", "retries", "hedges", "tail_hedges", "waited_for_faster")
LOCAL_MARKERS = ("running locally instead", "failed to distribute", "retrying locally")

# sim-cc: distcc runs `sim-cc -E file.c` locally (stdout is the "preprocessed" source)
# and `sim-cc -c file.c -o file.o` remotely or, on fallback, locally. The server runs it
# with only PATH and LANG, as an unprivileged user: no reliance on anything else.
SIM_CC = """#!/bin/sh
# sim-cc, speed {speed:.2f}: sleeps {per_kb_ms:.2f} ms per 1000 input bytes
mode= ; in= ; out=
while [ $# -gt 0 ]; do
    case "$1" in
        --version) echo "sim-cc (farm simulation) 1"; exit 0 ;;
        -E) mode=E ;;
        -c) mode=c ;;
        -o) shift; out="$1" ;;
        -*) ;;
        *) in="$1" ;;
    esac
    shift
done
if [ "$mode" = E ]; then exec cat "$in"; fi
if [ "$mode" != c ] || [ -z "$in" ] || [ -z "$out" ]; then
    echo "sim-cc: want -E FILE or -c FILE -o OUT" >&2; exit 2
fi
size=$(wc -c < "$in") || exit 1
ms=$(( size * 1000 / {bytes_per_speed_s} ))
sleep "$(( ms / 1000 )).$(printf '%03d' $(( ms % 1000 )))"
printf 'SIMOBJ %s {where}\\n' "$size" > "$out"
"""

HAPROXY_CFG = """global
    maxconn 4096

defaults
    mode tcp
    timeout connect 1s
    timeout client 300s
    timeout server 300s
    timeout queue 60s

frontend distcc
    bind {host}:{port}
    default_backend farm

backend farm
    balance leastconn
{servers}
"""


@dataclass(frozen=True)
class Scenario:
    servers: int
    slots: int
    clients: int
    jobs: int
    parallel: int  # make -j of each client
    stagger_s: float  # client k starts k * stagger_s after the first
    loaded_every: int  # every this-many-th server carries background load
    load_on_s: float  # background load windows: on this long ...
    load_off_s: float  # ... then off this long, repeating
    cap_s: float  # a strategy's builds are cut off after this long
    seed: int
    balancer_args: tuple[str, ...] = ()  # extra flags for every distlb-balancer
    work_scale: float = 1.0  # every job's work times this (fewer jobs a second, same shape)


# The farm must be the bottleneck, or no scheduler can come near the lower bound and the
# comparison says nothing about balancing: the clients ask for more slots than there are
# (6 x -j16 against 32), all have started within 2.5 s, and a build is long against its
# jobs (100 each). An oracle that knows every job's length needs 1.08 x the bound here;
# with 4 clients x 60 jobs starting 1 s apart (the first scenario) it needed 1.28 x.
# Builds that take longer than 30 s (plain host lists, which fall back to local compiles)
# are cut off there and reported as CAPPED: at least that long, and the run stays under
# 3 minutes.
QUICK = Scenario(8, 4, 6, 100, 16, 0.5, 3, 3.0, 3.0, 30.0, 8)
# 16 x 8 slots asked for by 12 x -j24. Jobs take three times as long as in --quick so that
# the farm runs ~55 jobs a second, as --quick does: at 130 a second the 2 cores were the
# bottleneck (every job starts a distcc client and a shell on this machine).
# The first --quick scenario, kept to compare with: 4 clients x 60 jobs starting 1 s apart
# never fill the farm for long, so every scheduler, the oracle too, ends ~1.3 x the bound;
# there the speed-aware choice of a free slot matters more than in a full farm.
LIGHT = Scenario(8, 4, 4, 60, 16, 1.0, 3, 3.0, 3.0, 120.0, 8)
FULL = Scenario(16, 8, 12, 200, 24, 0.5, 3, 5.0, 5.0, 300.0, 8, work_scale=3.0)


@dataclass(frozen=True)
class Farm:
    """What the seed decides: the same for every strategy."""

    speeds: list[float]  # per server
    loaded: list[int]  # servers with background load
    load_phase_s: list[float]  # per loaded server: when its first window opens
    job_work_s: list[list[float]]  # per client, per file: seconds at speed 1.0
    starts_s: list[float]  # per client


def make_farm(scenario: Scenario) -> Farm:
    rng = random.Random(scenario.seed)
    n = scenario.servers
    speeds = [round(0.5 + 1.5 * i / (n - 1), 3) for i in range(n)]
    rng.shuffle(speeds)
    loaded = list(range(0, n, scenario.loaded_every))
    period = scenario.load_on_s + scenario.load_off_s
    phases = [round(rng.uniform(0, period), 2) for _ in loaded]
    work = [
        [
            round(
                scenario.work_scale
                * min(
                    JOB_MAX_S, max(JOB_MIN_S, rng.lognormvariate(math.log(JOB_MEDIAN_S), JOB_SIGMA))
                ),
                3,
            )
            for _ in range(scenario.jobs)
        ]
        for _ in range(scenario.clients)
    ]
    starts = [round(k * scenario.stagger_s, 2) for k in range(scenario.clients)]
    return Farm(speeds, loaded, phases, work, starts)


def write_sim_cc(bin_dir: Path, speed: float, where: str) -> None:
    """``bin_dir/sim-cc`` at ``speed``; its objects name ``where`` they were compiled."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    bin_dir.chmod(0o755)
    script = bin_dir / "sim-cc"
    script.write_text(
        SIM_CC.format(
            speed=speed,
            where=where,
            per_kb_ms=1_000_000 / BYTES_PER_S / speed,
            bytes_per_speed_s=round(BYTES_PER_S * speed),
        )
    )
    script.chmod(0o755)


def daemon_env() -> dict[str, str]:
    """The environment of the distlb daemons: ours, plus the working tree on the module
    path, so that packages added since the venv's editable install (whose finder lists
    packages by name) are found."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "LANG": "C.UTF-8"}


@dataclass(frozen=True)
class Server:
    proc: Proc
    port: int
    stats_port: int
    agent_port: int
    speed: float


def start_servers(
    work: Path, scenario: Scenario, farm: Farm, procs: list[Proc], tag: str
) -> list[Server]:
    """One distlb-server per speed, each with its own sim-cc first on its PATH."""
    servers = []
    # All at once: ports picked one server at a time could repeat before anyone binds.
    ports = free_ports(3 * len(farm.speeds))
    for index, speed in enumerate(farm.speeds):
        bin_dir = work / f"server{index}-bin"
        write_sim_cc(bin_dir, speed, f"server{index}")
        tmp = work / f"{tag}-server{index}-tmp"
        tmp.mkdir()
        tmp.chmod(0o755)  # as root, compilers run unprivileged and must reach job dirs
        port, stats_port, agent_port = ports[3 * index : 3 * index + 3]
        command = [str(DISTLB_SERVER), "--listen", HOST, "--port", str(port)]
        command += ["--stats-port", str(stats_port), "--agent-port", str(agent_port)]
        command += ["--jobs", str(scenario.slots), "--compiler", "sim-cc", "--compiler", "gcc"]
        command += ["--log-format", "json", "--tmp-dir", str(tmp)]
        env = {**daemon_env(), "PATH": f"{bin_dir}:{os.environ.get('PATH', os.defpath)}"}
        proc = start(f"{tag}-server{index}", command, work, procs, env)
        servers.append(Server(proc, port, stats_port, agent_port, speed))
    for server in servers:
        wait_ready(server.proc, server.port)
        wait_ready(server.proc, server.stats_port)
        wait_ready(server.proc, server.agent_port)
    return servers


def start_haproxy(
    work: Path, servers: list[Server], slots: int, agent: bool, procs: list[Proc], tag: str
) -> int:
    (port,) = free_ports(1)
    lines = []
    for i, s in enumerate(servers):
        line = f"    server s{i} {HOST}:{s.port} maxconn {slots}"
        if agent:
            # The regular check connects to the agent port too: a bare TCP connect to
            # the distcc port would count as a bad request on the server.
            line += (
                f" check port {s.agent_port} inter 1s agent-check agent-port {s.agent_port}"
                " agent-inter 500ms weight 100"
            )
        lines.append(line)
    cfg = work / f"{tag}-haproxy.cfg"
    cfg.write_text(HAPROXY_CFG.format(host=HOST, port=port, servers="\n".join(lines)))
    check = subprocess.run(
        [str(HAPROXY), "-c", "-f", str(cfg)], capture_output=True, timeout=30, check=False
    )
    if check.returncode != 0:
        output = (check.stdout + check.stderr).decode(errors="replace")
        raise RuntimeError(f"haproxy -c refused {cfg}:\n{output}")
    wait_ready(start(f"{tag}-haproxy", [str(HAPROXY), "-db", "-f", str(cfg)], work, procs), port)
    return port


def start_balancer(
    work: Path, servers: list[Server], procs: list[Proc], name: str, extra: tuple[str, ...] = ()
) -> tuple[int, int]:
    """distlb-balancer on port 0; its ports come from its ``balancer_ready`` line. Returns
    them (distcc, admin) once every backend is in rotation."""
    command = [str(DISTLB_BALANCER), "--listen", HOST, "--port", "0", "--admin-port", "0"]
    command += ["--log-format", "json", *extra]
    for server in servers:
        command += ["--backend", f"{HOST}:{server.port},status={server.stats_port}"]
    proc = start(name, command, work, procs, daemon_env())
    deadline = time.monotonic() + READY_TIMEOUT_S
    ready: dict[str, object] | None = None
    while ready is None:
        if proc.popen.poll() is not None:
            raise RuntimeError(
                f"{name} exited {proc.popen.returncode}:\n{proc.log_path.read_text()}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name}: no balancer_ready in {READY_TIMEOUT_S}s")
        ready = next(
            (e for e in log_events(proc.log_path) if e.get("event") == "balancer_ready"), None
        )
        time.sleep(0.05)
    port, admin_port = int(str(ready["port"])), int(str(ready["admin_port"]))
    while True:
        totals = get_json(admin_port, "/status").get("totals")
        if isinstance(totals, dict) and totals.get("healthy_backends") == len(servers):
            return port, admin_port
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name}: backends not all up after {READY_TIMEOUT_S}s: {totals}")
        time.sleep(0.05)


def write_sources(work: Path, farm: Farm) -> list[Path]:
    """Each client's build directory, with one source per job sized to its work."""
    dirs = []
    for client, works in enumerate(farm.job_work_s):
        build = work / f"client{client}"
        build.mkdir()
        line = b"/* simulated translation unit: its size is its compile time */\n"
        for index, work_s in enumerate(works):
            size = round(work_s * BYTES_PER_S)
            body = (line * (size // len(line) + 1))[:size]
            (build / f"file{index:03d}.c").write_bytes(body)
        write_c_project(build / "real", modules=REAL_COMPILES - 1)
        dirs.append(build)
    return dirs


class JobResult(TypedDict):
    file: int
    work_s: float
    start_s: float  # since the strategy's t0
    wall_s: float
    local: bool  # the object came from the client's own sim-cc
    said_local: bool  # distcc warned that it ran the job locally
    ok: bool


@dataclass
class ClientRun:
    start_s: float = 0.0
    end_s: float = 0.0
    jobs: list[JobResult] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    said: Counter[str] = field(default_factory=Counter)  # distcc's stderr lines
    real_checked: int = 0
    real_identical: int = 0
    real_local: int = 0  # distcc said it compiled the file locally


async def stderr_of(proc: asyncio.subprocess.Process) -> str:
    """What a client run wrote to stderr, once it exits. Cancelled (the cap cut the
    build off), its whole session is killed and reaped first: nothing may run on into
    the next strategy's run."""
    try:
        _, stderr = await proc.communicate()
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(proc.wait(), 10)
        raise
    return stderr.decode(errors="replace")


async def run_job(
    build: Path, index: int, env: dict[str, str], t0: float, run: ClientRun, work_s: float
) -> None:
    """One `nice timeout 300 distcc sim-cc -c fileN.c -o fileN.o`, timed, in its own group."""
    name = f"file{index:03d}"
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        "nice", "-n", str(CLIENT_NICE), "timeout", str(CLIENT_TIMEOUT_S),
        "distcc", "sim-cc", "-c", f"{name}.c", "-o", f"{name}.o",
        cwd=build, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    stderr = await stderr_of(proc)
    wall_s = time.monotonic() - started
    said_local = any(marker in stderr for marker in LOCAL_MARKERS)
    for line in stderr.splitlines():
        # What distcc said, without the file names and ports, to see why jobs went local.
        run.said[re.sub(r"file\d+\.c|\d+", "N", line.split("] ", 1)[-1])[:100]] += 1
    obj = build / f"{name}.o"
    made = obj.read_bytes()[:100] if obj.is_file() else b""
    ok = proc.returncode == 0 and made.startswith(b"SIMOBJ")
    # The object says where it was compiled; distcc's warnings, for a cross-check.
    local = made.rstrip().endswith(b" local")
    if not ok:
        run.errors[f"rc={proc.returncode}: {stderr.strip()[-120:]}"] += 1
    run.jobs.append(
        JobResult(
            file=index,
            work_s=work_s,
            start_s=round(started - t0, 3),
            wall_s=round(wall_s, 3),
            local=local,
            said_local=said_local,
            ok=ok,
        )
    )


async def run_client(
    build: Path,
    works: list[float],
    parallel: int,
    env: dict[str, str],
    t0: float,
    delay_s: float,
    run: ClientRun,
) -> None:
    """A build of ``len(works)`` files at ``-j parallel``, in file order, after ``delay_s``;
    what happens goes into ``run`` (kept when the build is cut off)."""
    await asyncio.sleep(delay_s)
    run.start_s = time.monotonic() - t0
    queue = list(range(len(works)))
    queue.reverse()

    async def worker() -> None:
        while queue:
            index = queue.pop()
            await run_job(build, index, env, t0, run, works[index])

    await asyncio.gather(*(worker() for _ in range(parallel)))
    run.end_s = time.monotonic() - t0
    await real_compiles(build / "real", env, run)


async def real_compiles(project: Path, env: dict[str, str], run: ClientRun) -> None:
    """The sanity check beside the simulation: a few real C files compiled with gcc
    through the same strategy, each object compared with a local compile's."""
    for source in sources(project):
        proc = await asyncio.create_subprocess_exec(
            "nice", "-n", str(CLIENT_NICE), "timeout", str(CLIENT_TIMEOUT_S),
            "distcc", "gcc", *CFLAGS.split(), "-c", source.name, "-o", f"{source.stem}.o",
            cwd=project, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        stderr = await stderr_of(proc)
        run.real_local += any(marker in stderr for marker in LOCAL_MARKERS)
        run.real_checked += 1
        run.real_identical += proc.returncode == 0 and identical_to_local(project, source)


def identical_to_local(project: Path, source: Path) -> bool:
    obj = project / f"{source.stem}.o"
    return obj.is_file() and obj.read_bytes() == local_object(project, source, "gcc")


@dataclass
class Background:
    jobs_done: int = 0
    work_s: float = 0.0  # speed-1.0 seconds completed
    turned_away: int = 0
    errors: Counter[str] = field(default_factory=Counter)


async def background_load(
    server: Server, phase_s: float, scenario: Scenario, t0: float, load: Background
) -> None:
    """Windows of ``load_on_s`` every ``load_on_s + load_off_s`` during which half the
    server's slots run sim jobs sent straight to it; runs until cancelled."""
    period = scenario.load_on_s + scenario.load_off_s
    occupy = max(1, scenario.slots // 2)

    async def occupant(window_end: float) -> None:
        while (left := window_end - time.monotonic()) > 0.05:
            seconds = min(BACKGROUND_JOB_S, left)
            size = round(seconds * server.speed * BYTES_PER_S)
            request = Request(1, ("sim-cc", "-c", "bg.c", "-o", "bg.o"), b"x" * size)
            try:
                reply = await compile_remote(HOST, server.port, request, timeout_s=60.0)
            except TurnedAway:
                load.turned_away += 1
                await asyncio.sleep(BACKGROUND_RETRY_S)
                continue
            except ClientError as exc:
                load.errors[type(exc).__name__] += 1
                await asyncio.sleep(BACKGROUND_RETRY_S)
                continue
            if reply.ok:
                load.jobs_done += 1
                load.work_s += size / BYTES_PER_S
            else:
                load.errors[f"status {reply.status}"] += 1
                await asyncio.sleep(BACKGROUND_RETRY_S)

    window = 0
    while True:
        opens = t0 + phase_s + window * period
        await asyncio.sleep(max(0.0, opens - time.monotonic()))
        closes = opens + scenario.load_on_s
        await asyncio.gather(*(occupant(closes) for _ in range(occupy)))
        window += 1


def client_env(
    home: Path, build_index: int, hosts: str, strategy: str, client_bin: Path
) -> dict[str, str]:
    distcc_dir = home / f"distcc-dir{build_index}"
    distcc_dir.mkdir()
    env = {
        "PATH": f"{client_bin}:{os.environ.get('PATH', os.defpath)}",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "DISTCC_DIR": str(distcc_dir),
        "DISTCC_HOSTS": f"--localslots={LOCAL_SLOTS} {hosts}",
    }
    if strategy in BALANCED:
        # One address for the whole farm: a single turn-away must not send the rest of
        # the build local for a minute. DISTCC_FALLBACK stays on (the default).
        env["DISTCC_BACKOFF_PERIOD"] = "0"
    return env


async def run_builds(
    scenario: Scenario,
    farm: Farm,
    builds: list[Path],
    envs: list[dict[str, str]],
    servers: list[Server],
) -> tuple[list[ClientRun], Background, float]:
    """Every client's build plus the background load; the load stops with the last build.
    Returns the runs (a build the cap cut off has no end), the load and the wall time."""
    t0 = time.monotonic()
    load = Background()
    background = [
        asyncio.create_task(background_load(servers[i], phase, scenario, t0, load))
        for i, phase in zip(farm.loaded, farm.load_phase_s, strict=True)
    ]
    runs = [ClientRun() for _ in builds]
    clients = [
        asyncio.create_task(run_client(build, works, scenario.parallel, env, t0, delay, run))
        for build, works, env, delay, run in zip(
            builds, farm.job_work_s, envs, farm.starts_s, runs, strict=True
        )
    ]
    try:
        _done, pending = await asyncio.wait(clients, timeout=scenario.cap_s)
        if pending:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
    wall_s = time.monotonic() - t0
    return runs, load, wall_s


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
    balancers: list[tuple[int, int]] = []
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
                start_balancer(work, servers, mine, f"{tag}-b{i}", scenario.balancer_args)
                for i in range(count)
            ]
            hosts = [f"{HOST}:{balancers[k % count][0]}/64" for k in range(scenario.clients)]
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
        for _port, admin_port in balancers:
            totals = get_json(admin_port, "/status")["totals"]
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
    capacity = sum(scenario.slots * speed for speed in farm.speeds)
    client_work = sum(sum(works) for works in farm.job_work_s)
    longest = max(max(works) for works in farm.job_work_s) / max(farm.speeds)
    lower = max((client_work + load.work_s) / capacity, longest)
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


def ideal_greedy(scenario: Scenario, farm: Farm) -> tuple[float, float]:
    """A reference, not a strategy: the makespan of a scheduler with no overhead and no
    background load that knows every speed and puts each job, when the client's ``-j``
    lets it ask, on the fastest free slot (requests served first come, first served).
    Returns (its makespan, the lower bound of that load). What is left between the two
    is the cost of the stagger, ``-j`` and the last long jobs, which no balancer avoids."""
    slot_speeds = sorted((s for s in farm.speeds for _ in range(scenario.slots)), reverse=True)
    free = list(range(len(slot_speeds)))  # indices into slot_speeds, fastest first
    next_job = [0] * scenario.clients
    events: list[tuple[float, int, int, int]] = []  # (time, order, client, slot or -1)
    order = 0
    for client, start_s in enumerate(farm.starts_s):
        for _ in range(scenario.parallel):
            events.append((start_s, order, client, -1))
            order += 1
    heapq.heapify(events)
    pending: deque[int] = deque()
    finish_s = 0.0
    while events:
        now = events[0][0]
        while events and events[0][0] == now:
            _, _, client, slot = heapq.heappop(events)
            if slot >= 0:
                bisect.insort(free, slot)
            pending.append(client)
        while pending and free:
            client = pending.popleft()
            if next_job[client] >= scenario.jobs:
                continue  # this worker of the client's make has nothing left to start
            slot = free.pop(0)
            done = now + farm.job_work_s[client][next_job[client]] / slot_speeds[slot]
            next_job[client] += 1
            finish_s = max(finish_s, done)
            heapq.heappush(events, (done, order, client, slot))
            order += 1
    work = sum(sum(works) for works in farm.job_work_s)
    longest = max(max(works) for works in farm.job_work_s) / max(farm.speeds)
    return finish_s - min(farm.starts_s), max(work / sum(slot_speeds), longest)


def ideal_earliest_finish(scenario: Scenario, farm: Farm) -> float:
    """A second reference, an oracle: it knows every job's length and when every slot
    comes free, and puts each job (when the client's ``-j`` lets it ask) on the slot
    where it would finish first, waiting for a fast slot rather than taking a slow one
    when that ends sooner. No overhead, no background load. Returns its makespan (its
    lower bound is ``ideal_greedy``'s)."""
    slot_speeds = [s for s in farm.speeds for _ in range(scenario.slots)]
    free_at = [0.0] * len(slot_speeds)
    next_job = [0] * scenario.clients
    asks = [(start_s, client) for client, start_s in enumerate(farm.starts_s)]
    asks = [ask for ask in asks for _ in range(scenario.parallel)]
    heapq.heapify(asks)
    finish_s = 0.0
    while asks:
        now, client = heapq.heappop(asks)
        if next_job[client] >= scenario.jobs:
            continue
        work = farm.job_work_s[client][next_job[client]]
        next_job[client] += 1
        done, slot = min(
            (max(now, free) + work / speed, i)
            for i, (free, speed) in enumerate(zip(free_at, slot_speeds, strict=True))
        )
        free_at[slot] = done
        finish_s = max(finish_s, done)
        heapq.heappush(asks, (done, client))
    return finish_s - min(farm.starts_s)


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
                  label="lower bound" if x == 0 else None)  # fmt: skip
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


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    # SIGTERM unwinds like Ctrl-C, through the finally blocks that stop what we started.
    signal.signal(signal.SIGTERM, _interrupt)
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
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
    args = parser.parse_args()
    scenario = QUICK if args.quick else LIGHT if args.light else FULL
    if args.seed is not None:
        scenario = Scenario(**{**asdict(scenario), "seed": args.seed})
    if args.balancer_arg:
        scenario = Scenario(**{**asdict(scenario), "balancer_args": tuple(args.balancer_arg)})
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
