"""Chaos: real builds through distlb-balancer while servers fail under them.

Repeated builds of a multi-file C library with the real distcc client (fallback off, so
a job the farm cannot finish fails the build) through one balancer, then through two,
while a fault injector, bounded in count and time, SIGKILLs distlb servers (and starts
them again), SIGSTOPs them (and SIGCONTs them later), black-holes them and slows them
down (a FaultRelayForTests in front of each server's ports), and, in the two-balancer
run, restarts a balancer once. A real distccd is a backend too. Prints, per run and in
all: builds, failed builds, wrong objects, faults, jobs slower than the fault-free p99
plus the hedge deadline, and the worst stall.

    .venv/bin/python -m bench.chaos [--quick] [--seed N]

--quick: about a minute and a half. The default run injects well over 50 faults.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import HOST, Proc, free_ports, log_events, start, stop, stop_all, wait_ready
from client.quantiles import quantile
from tests.support.fault_relay import RelayThread
from tests.support.projects import write_c_project

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
BIN = ROOT / ".venv" / "bin"
MODULES = 23  # + main.c: 24 jobs a build
JOBS = 8
CLIENT_TIMEOUT_S = 240
BALANCER_FLAGS = [
    "--poll-interval", "0.2", "--probe-interval", "0.5", "--fall", "2", "--rise", "2",
    "--probe-timeout", "1", "--queue-timeout", "30", "--backend-idle-timeout", "3",
    "--hedge-min", "2", "--log-format", "json",
]  # fmt: skip
HEDGE_DEADLINE_S = 2.0  # --hedge-min above: a job later than this is hedged
PHASE_LIMIT_S = 1500.0


@dataclass
class Backend:
    name: str
    port: int
    stats_port: int
    relay: RelayThread
    stats_relay: RelayThread
    proc: Proc | None = None
    command: list[str] = field(default_factory=list)
    kind: str = "distlb"
    faulted: str = ""


@dataclass
class RunResult:
    balancers: int
    builds: int = 0
    failed_builds: int = 0
    wrong_objects: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    job_ms: list[float] = field(default_factory=list)
    slow_jobs: int = 0
    worst_stall_ms: float = 0.0
    balancer_restarts: int = 0
    errors: list[str] = field(default_factory=list)
    slow: list[dict[str, object]] = field(default_factory=list)
    """The job_done lines of jobs slower than the bound: where their time went."""


def _server(work: Path, name: str, procs: list[Proc]) -> Backend:
    port, stats = free_ports(2)
    tmp = work / f"{name}-tmp"
    tmp.mkdir()
    tmp.chmod(0o755)
    command = [str(BIN / "distlb-server"), "--listen", HOST, "--port", str(port),
               "--stats-port", str(stats), "--jobs", "2", "--log-format", "json",
               "--tmp-dir", str(tmp), "--offer-by-load", "off"]  # fmt: skip
    backend = Backend(name, port, stats, RelayThread((HOST, port)), RelayThread((HOST, stats)))
    backend.command = command
    backend.proc = start(name, command, work, procs)
    wait_ready(backend.proc, port)
    return backend


def _distccd(work: Path, procs: list[Proc]) -> Backend:
    port, stats = free_ports(2)
    command = ["distccd", "--daemon", "--no-detach", "--listen", HOST, "--port", str(port),
               "--allow", HOST, "--jobs", "2", "--stats", "--stats-port", str(stats),
               "--log-stderr", "--log-level", "error"]  # fmt: skip
    if os.geteuid() == 0:
        command += ["--user", "distccd"]
    backend = Backend("distccd", port, stats, RelayThread((HOST, port)),
                      RelayThread((HOST, stats)), kind="distccd")  # fmt: skip
    backend.proc = start("distccd", command, work, procs)
    wait_ready(backend.proc, port)
    return backend


def _spec(backend: Backend) -> str:
    spec = f"{HOST}:{backend.relay.port},status={backend.stats_relay.port}"
    return spec + (",kind=distccd" if backend.kind == "distccd" else "")


def _balancer(work: Path, name: str, port: int, admin: int, backends: list[Backend],
              procs: list[Proc]) -> Proc:  # fmt: skip
    command = [str(BIN / "distlb-balancer"), "--listen", HOST, "--port", str(port),
               "--admin-port", str(admin), *BALANCER_FLAGS,
               *(arg for b in backends for arg in ("--backend", _spec(b)))]  # fmt: skip
    proc = start(name, command, work, procs)
    wait_ready(proc, port)
    return proc


class Injector:
    """Faults at random moments, at most two servers faulted at once, each undone later."""

    def __init__(self, backends: list[Backend], work: Path, procs: list[Proc],
                 rng: random.Random, result: RunResult) -> None:  # fmt: skip
        self.backends = backends
        self.work = work
        self.procs = procs
        self.rng = rng
        self.result = result
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _inject(self, backend: Backend) -> str:
        kinds = ["blackhole", "slow"]
        if backend.kind == "distlb":
            kinds += ["kill", "stop"]
        fault = self.rng.choice(kinds)
        if fault == "kill" and backend.proc is not None:
            backend.proc.popen.kill()
            backend.proc.popen.wait()
        elif fault == "stop" and backend.proc is not None:
            os.kill(backend.proc.popen.pid, signal.SIGSTOP)
        elif fault == "blackhole":
            backend.relay.set_mode("blackhole")
            backend.stats_relay.set_mode("blackhole")
        else:
            backend.relay.relay.delay_s = 0.3
        backend.faulted = fault
        return fault

    def heal(self, backend: Backend) -> None:
        fault, backend.faulted = backend.faulted, ""
        if fault == "kill":
            backend.proc = start(backend.name, backend.command, self.work, self.procs)
            wait_ready(backend.proc, backend.port)
        elif fault == "stop" and backend.proc is not None:
            os.kill(backend.proc.popen.pid, signal.SIGCONT)
        elif fault == "blackhole":
            backend.relay.set_mode("pass")
            backend.stats_relay.set_mode("pass")
        elif fault == "slow":
            backend.relay.relay.delay_s = 0.0

    def _run(self) -> None:
        while not self.stop.wait(self.rng.uniform(0.3, 1.0)):
            try:
                self._step()
            except Exception as exc:  # written down, and the injector goes on
                self.result.errors.append(f"injector: {type(exc).__name__}: {exc}"[:600])

    def _step(self) -> None:
        with self.lock:
            healthy = [b for b in self.backends if not b.faulted]
            faulted = [b for b in self.backends if b.faulted]
            if faulted and (len(faulted) >= 2 or self.rng.random() < 0.5):
                self.heal(self.rng.choice(faulted))
            elif healthy:
                fault = self._inject(self.rng.choice(healthy))
                self.result.faults[fault] = self.result.faults.get(fault, 0) + 1

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(30)
        with self.lock:
            for backend in self.backends:
                if backend.faulted:
                    self.heal(backend)


def _reference(project: Path) -> dict[str, bytes]:
    objects = {}
    for source in sorted(project.glob("*.c")):
        out = source.with_suffix(".ref.o")
        subprocess.run(["gcc", "-O2", "-Wall", "-c", source.name, "-o", out.name],
                       cwd=project, check=True)  # fmt: skip
        objects[source.stem] = out.read_bytes()
        out.unlink()
    return objects


def _build(project: Path, hosts: str, reference: dict[str, bytes], result: RunResult,
           work: Path) -> None:  # fmt: skip
    subprocess.run(["make", "clean"], cwd=project, capture_output=True, check=False)
    for obj in project.glob("*.o"):
        obj.unlink()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTCC_")}
    env["DISTCC_DIR"] = tempfile.mkdtemp(prefix="distcc-dir-", dir=work)
    env.update(DISTCC_HOSTS=hosts, DISTCC_FALLBACK="0", DISTCC_BACKOFF_PERIOD="1",
               DISTCC_IO_TIMEOUT="60")  # fmt: skip
    done = subprocess.run(
        ["timeout", str(CLIENT_TIMEOUT_S), "make", f"-j{JOBS}", "CC=distcc gcc"],
        cwd=project, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    result.builds += 1
    if done.returncode != 0:
        result.failed_builds += 1
        result.errors.append(done.stderr[-600:])
        return
    for stem, expected in reference.items():
        if (project / f"{stem}.o").read_bytes() != expected:
            result.wrong_objects += 1


def _job_times(procs: list[Proc], skip: dict[str, int] | None = None) -> tuple[list[float], int]:
    """Job latencies from the balancers' job_done lines (after the first ``skip[name]``
    lines of each log), and how many jobs failed or were turned away."""
    ms, failed = [], 0
    for proc in procs:
        for event in log_events(proc.log_path)[(skip or {}).get(proc.name, 0) :]:
            if event.get("event") == "job_done" and not event.get("cached"):
                ms.append(float(str(event.get("ms", 0))))
                failed += event.get("outcome") in ("failed", "turned_away")
    return ms, failed


def run(quick: bool, seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="distlb-chaos-"))
    work.chmod(0o755)
    procs: list[Proc] = []
    backends: list[Backend] = []
    results: list[RunResult] = []
    deadline = time.monotonic() + PHASE_LIMIT_S
    try:
        project = write_c_project(work / "lib", modules=MODULES)
        reference = _reference(project)
        backends = [_server(work, f"server{i}", procs) for i in range(4)]
        backends.append(_distccd(work, procs))
        ports = free_ports(4)
        balancers = [_balancer(work, "balancer-a", ports[0], ports[1], backends, procs)]
        # Fault-free: the latency of a job when nothing goes wrong.
        calm = RunResult(balancers=1)
        for _ in range(2):
            _build(project, f"{HOST}:{ports[0]}/{JOBS}", reference, calm, work)
        calm_ms, _ = _job_times(balancers)
        p99 = quantile(calm_ms, 0.99) or 0.0  # (already in ms)
        bound_ms = p99 + HEDGE_DEADLINE_S * 1000
        builds_per_run = 8 if quick else 50
        for count in (1, 2):
            if count == 2:
                balancers.append(_balancer(work, "balancer-b", ports[2], ports[3], backends, procs))
            result = RunResult(balancers=count)
            hosts = " ".join(f"{HOST}:{ports[2 * i]}/{JOBS}" for i in range(count))
            seen = {proc.name: len(log_events(proc.log_path)) for proc in balancers}
            injector = Injector(backends, work, procs, rng, result)
            injector.thread.start()
            try:
                for index in range(builds_per_run):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"chaos took longer than {PHASE_LIMIT_S} s")
                    if count == 2 and index == builds_per_run // 2:
                        # Once per run: a balancer restarts (drains, then comes back).
                        stop(balancers[1])
                        balancers.append(_balancer(work, "balancer-b-again", ports[2],
                                                   ports[3], backends, procs))  # fmt: skip
                        result.balancer_restarts += 1
                    _build(project, hosts, reference, result, work)
            finally:
                injector.finish()
            ms, _ = _job_times(balancers, seen)
            result.job_ms = ms
            result.slow = [
                {k: e.get(k) for k in ("ms", "backend", "tries", "outcome")}
                for proc in balancers
                for e in log_events(proc.log_path)[seen.get(proc.name, 0) :]
                if e.get("event") == "job_done" and float(str(e.get("ms", 0))) > bound_ms
            ]
            result.slow_jobs = sum(1 for m in ms if m > bound_ms)
            result.worst_stall_ms = max(ms, default=0.0)
            results.append(result)
        return {"seed": seed, "quick": quick, "calm_p99_ms": round(p99, 1),
                "bound_ms": round(bound_ms, 1), "runs": [_summary(r) for r in results]}  # fmt: skip
    finally:
        stop_all(procs)
        for backend in backends:
            backend.relay.close()
            backend.stats_relay.close()
        shutil.rmtree(work, ignore_errors=True)


def _summary(result: RunResult) -> dict[str, object]:
    return {
        "balancers": result.balancers,
        "builds": result.builds,
        "failed_builds": result.failed_builds,
        "wrong_objects": result.wrong_objects,
        "faults": result.faults,
        "jobs": len(result.job_ms),
        "slow_jobs": result.slow_jobs,
        "worst_stall_ms": round(result.worst_stall_ms, 1),
        "balancer_restarts": result.balancer_restarts,
        "errors": result.errors[:5],
        "slow": result.slow[:10],
    }


def table(report: dict[str, object]) -> str:
    runs = report["runs"]
    assert isinstance(runs, list)
    lines = [
        "| balancers | builds | failed builds | wrong objects | faults | jobs | slower than "
        "bound | worst stall ms |",
        "|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    totals = {"builds": 0, "failed_builds": 0, "wrong_objects": 0, "faults": 0, "jobs": 0,
              "slow_jobs": 0, "worst": 0.0}  # fmt: skip
    for r in runs:
        faults = sum(r["faults"].values())
        lines.append(
            f"| {r['balancers']} | {r['builds']} | {r['failed_builds']} | {r['wrong_objects']} "
            f"| {faults} ({', '.join(f'{k} {v}' for k, v in sorted(r['faults'].items()))}) "
            f"| {r['jobs']} | {r['slow_jobs']} | {r['worst_stall_ms']:.0f} |"
        )
        for key in ("builds", "failed_builds", "wrong_objects", "jobs", "slow_jobs"):
            totals[key] += r[key]
        totals["faults"] += faults
        totals["worst"] = max(totals["worst"], r["worst_stall_ms"])
    lines.append(
        f"| all | {totals['builds']} | {totals['failed_builds']} | {totals['wrong_objects']} "
        f"| {totals['faults']} | {totals['jobs']} | {totals['slow_jobs']} "
        f"| {totals['worst']:.0f} |"
    )
    errors = [e for r in runs for e in r["errors"]]
    lines.append("")
    if errors:
        lines.append("Errors: " + " / ".join(errors))
        lines.append("")
    lines.append(
        f"Fault-free p99 {report['calm_p99_ms']} ms; bound = p99 + {HEDGE_DEADLINE_S:.0f} s "
        f"(the hedge deadline) = {report['bound_ms']} ms. Seed {report['seed']}. Builds of "
        f"{MODULES + 1} C files at -j{JOBS}, fallback off, over 4 distlb servers and a distccd "
        "(each behind a fault relay)."
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="fewer builds (about 90 s)")
    parser.add_argument("--seed", type=int, default=20)
    args = parser.parse_args()
    started = time.monotonic()
    report = run(args.quick, args.seed)
    text = table(report)
    print(text)
    took = round(time.monotonic() - started, 1)
    print(f"(took {took} s)")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    name = "chaos-quick" if args.quick else "chaos"
    (RESULTS_DIR / f"{name}.json").write_text(json.dumps({**report, "took_s": took}, indent=1))
    (RESULTS_DIR / f"{name}.md").write_text(f"# Chaos\n\n{text}\n\nTook {took} s.\n")
    runs = report["runs"]
    assert isinstance(runs, list)
    return 1 if any(r["failed_builds"] or r["wrong_objects"] for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
