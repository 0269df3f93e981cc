"""The simulated clients: each build's sources, its distcc runs at ``-j``, the real
gcc compiles after it, and the background load sent straight to some servers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

from bench.harness import HOST
from client import ClientError, TurnedAway, compile_remote
from tests.support.projects import CFLAGS, local_object, sources, write_c_project
from wire import Request

from .model import BALANCED, BYTES_PER_S, Farm, Scenario
from .processes import Server

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
LOCAL_MARKERS = ("running locally instead", "failed to distribute", "retrying locally")


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
