"""Pump mode (issue 29): distlb-server's pump against Debian's distccd pump, and pump
against plain mode through the balancer, in one run, driven by the real pump client.

A generated C project (bench/server_vs_distccd.py's) is built in pump mode (one
include server for the whole run, started with ``pump --startup``: the ``pump`` wrapper's
own start and stop, about a second, are not the servers') through: Debian's distccd
(the reference: its own pump support), distlb-server directly, and distlb-balancer in
front of that distlb-server; and with plain distcc (``,lzo``: the client preprocesses)
through the same balancer; and through a second balancer with a Redis cache, each of
pump and plain cold (Redis emptied) then warm (the same tree again: every file a hit; a
pump hit needs no preprocessing on the client). Rounds alternate the order; every
build's objects must equal the first's. Prints medians, the paired
ratios per round and their spread, and writes them to bench/results/pump.md.

``--project git``: the same builds of a real project instead: git's ``libgit.a`` (its
245 objects, ``-O2 -Wall``, with git's own ``-MMD -MP`` dependency files), from the
upstream tarball of Debian's ``git`` source package (downloaded once into the test
cache, through the deb-src entry the test bootstrap writes). Every build's objects must
equal those of a local build made first. Writes bench/results/pump-git.md.

Needs the pump client the test bootstrap builds (scripts/build-pump-client.sh).
``DISTLB_BENCH_KEEP=1`` keeps the run's directory (the daemons' logs) for a look after.

    .venv/bin/python -m bench.pump [--jobs N] [--rounds R] [--files F] [--project git]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import Proc, free_ports, get_json, start, stop_all, wait_healthy, wait_ready
from bench.server_vs_distccd import (
    CLIENT_TIMEOUT_S,
    DISTLB_SERVER,
    RESULTS_DIR,
    check_objects,
    start_servers,
    timed,
    write_project,
)
from tests.support.secrets import write_secret

DISTLB_BALANCER = DISTLB_SERVER.with_name("distlb-balancer")
GOAL_RATIO = 1.10
PHASE_LIMIT_S = 1800.0


def pump_bin() -> Path:
    cache = Path(os.environ.get("DISTLB_TEST_CACHE", "/var/cache/distlb-test"))
    try:
        prefix = Path((cache / "pump-current").read_text().strip())
    except OSError as exc:
        raise SystemExit(f"no pump client built ({exc}): run scripts/bootstrap.sh test") from exc
    if not (prefix / ".distlb-built").is_file():
        raise SystemExit(f"{prefix} is not a finished build: run scripts/bootstrap.sh test")
    return prefix / "bin"


def start_balancer(
    work: Path, backend_port: int, stats_port: int, procs: list[Proc], *extra: str
) -> tuple[int, int]:
    """A balancer in front of the distlb-server (``extra``: more flags): its port and
    its admin port."""
    port, admin = free_ports(2)
    command = [str(DISTLB_BALANCER), "--listen", "127.0.0.1", "--port", str(port),
               "--admin-port", str(admin), "--log-format", "json", "--log-level", "warning",
               "--backend", f"127.0.0.1:{backend_port},status={stats_port}",
               # (a health probe is a compile that takes a slot: every 30 s by default, it
               # took one the direct builds' client wanted, which was turned away)
               "--idle-probe-interval", "3600", *extra]  # fmt: skip
    proc = start(f"balancer{'-cached' if extra else ''}", command, work, procs)
    wait_ready(proc, port)
    wait_ready(proc, admin)
    wait_healthy(admin, 1, 60)
    return port, admin


def start_include_server(bin_dir: Path, env: dict[str, str], work: Path) -> dict[str, str]:
    """``pump --startup``: the include server's variables (its pid, directory, socket)."""
    done = subprocess.run(
        [str(bin_dir / "pump"), "--startup"], env={**env, "DISTCC_HOSTS": "127.0.0.1:1/1,cpp,lzo"},
        capture_output=True, text=True, timeout=60, check=True, cwd=work,
    )  # fmt: skip
    found = dict(re.findall(r"^export (INCLUDE_SERVER_\w+)='([^']*)'$", done.stdout, re.M))
    if set(found) != {"INCLUDE_SERVER_PID", "INCLUDE_SERVER_DIR", "INCLUDE_SERVER_PORT"}:
        raise RuntimeError(f"pump --startup said: {done.stdout}{done.stderr}")
    return found


def stop_include_server(bin_dir: Path, env: dict[str, str]) -> None:
    subprocess.run([str(bin_dir / "pump"), "--shutdown"], env=env, capture_output=True,
                   timeout=60, check=False)  # fmt: skip


@dataclass
class Generated:
    """bench/server_vs_distccd.py's generated project: each build in an object directory
    of its own (the cached builds in one: the cache's key names it); every build's
    objects equal the first's."""

    root: Path
    files: int
    stems: list[str] = field(default_factory=list)
    reference: dict[str, str] = field(default_factory=dict)

    def prepare(self) -> None:
        self.stems = write_project(self.root, self.files)

    def out_dir(self, cached: bool) -> Path:
        if cached:
            out = self.root / "out-cached"
            out.mkdir()
            return out
        return Path(tempfile.mkdtemp(prefix="out-", dir=self.root))

    def command(self, jobs: int, out: Path, cc: str) -> list[str]:
        return ["make", "-s", f"-j{jobs}", f"OUT={out.name}", f"CC={cc}"]

    def check_and_clean(self, out: Path, what: str) -> None:
        check_objects(out, self.stems, self.reference, what)
        shutil.rmtree(out)


GIT_MAKE_ARGS = ("NO_OPENSSL=1", "NO_CURL=1", "NO_EXPAT=1", "NO_GETTEXT=1", "NO_TCLTK=1",
                 "NO_PERL=1", "NO_PYTHON=1", "COMPUTE_HEADER_DEPENDENCIES=yes",
                 "CFLAGS=-O2 -Wall")  # fmt: skip
"""No -g: a plain build's objects (preprocessed by the client) then equal pump's and a
local build's; no optional libraries (only zlib's headers are needed)."""


@dataclass
class GitLibrary:
    """git's ``libgit.a``, built in its own tree (every build the same directory: a
    cached build's key names it); every build's objects equal a local build's."""

    work: Path
    root: Path = Path()
    stems: list[str] = field(default_factory=list)
    reference: dict[str, str] = field(default_factory=dict)

    def prepare(self) -> None:
        tarball = git_tarball()
        subprocess.run(["tar", "-xf", str(tarball), "-C", str(self.work)], check=True,
                       timeout=300)  # fmt: skip
        (self.root,) = (p for p in self.work.iterdir() if p.name.startswith("git-"))
        # The local build: the reference objects, and git's generated headers made once.
        timed(self.command(os.cpu_count() or 2, self.root, "gcc"), self.root, dict(os.environ))
        self.stems = sorted(str(p.relative_to(self.root))[:-2] for p in self.root.rglob("*.o"))
        check_objects(self.root, self.stems, self.reference, "local build")
        self.clean()

    def out_dir(self, cached: bool) -> Path:
        return self.root

    def command(self, jobs: int, out: Path, cc: str) -> list[str]:
        return ["make", "-s", f"-j{jobs}", "libgit.a", *GIT_MAKE_ARGS, f"CC={cc}"]

    def check_and_clean(self, out: Path, what: str) -> None:
        check_objects(out, self.stems, self.reference, what)
        self.clean()

    def clean(self) -> None:
        for stem in self.stems:
            (self.root / f"{stem}.o").unlink(missing_ok=True)
        shutil.rmtree(self.root / ".depend", ignore_errors=True)
        (self.root / "libgit.a").unlink(missing_ok=True)


def git_tarball() -> Path:
    """The upstream tarball of Debian's ``git`` source package, downloaded once into
    the test cache (the newest version the deb-src index names)."""
    shown = subprocess.run(["apt-cache", "showsrc", "--only-source", "git"],
                           capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    versions = re.findall(r"^Version: (\S+)$", shown.stdout, re.M)
    if not versions:
        raise SystemExit("no deb-src index names the git source package: run "
                         "scripts/bootstrap.sh test (it writes the deb-src entry)")  # fmt: skip
    newest = max(versions, key=functools.cmp_to_key(_compare_versions))
    cache = Path(os.environ.get("DISTLB_TEST_CACHE", "/var/cache/distlb-test"))
    where = cache / f"git-source-{newest.replace(':', '_')}"
    found = sorted(where.glob("git_*.orig.tar.*"))
    if not found:
        where.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(KeyError, PermissionError):  # (apt downloads as _apt)
            shutil.chown(where, "_apt")
        subprocess.run(["apt-get", "source", "--download-only", "--tar-only", "-q",
                        f"git={newest}"], cwd=where, check=True, timeout=600)  # fmt: skip
        found = sorted(where.glob("git_*.orig.tar.*"))
    if len(found) != 1:
        raise SystemExit(f"expected one git tarball in {where}, found {found}")
    return found[0]


def _compare_versions(a: str, b: str) -> int:
    """Debian's order of package versions (``dpkg --compare-versions``)."""
    if a == b:
        return 0
    earlier = subprocess.run(["dpkg", "--compare-versions", a, "lt", b], check=False)
    return -1 if earlier.returncode == 0 else 1


def run(jobs: int, rounds: int, files: int, project_name: str) -> dict[str, list[float]]:
    bin_dir = pump_bin()
    work = Path(tempfile.mkdtemp(prefix="distlb-bench-pump-"))
    work.chmod(0o755)
    servers: dict[str, tuple[Proc, int]] = {}
    procs: list[Proc] = []
    shutdown: list[Callable[[], None]] = []
    try:
        project: Generated | GitLibrary = (
            GitLibrary(work) if project_name == "git" else Generated(work / "project", files)
        )
        project.prepare()
        start_servers(work, jobs, servers)
        args = [str(arg) for arg in servers["distlb"][0].popen.args]  # type: ignore[union-attr]
        stats_port = int(args[args.index("--stats-port") + 1])
        balancer, _ = start_balancer(work, servers["distlb"][1], stats_port, procs)
        (redis_port,) = free_ports(1)
        redis = start("redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no", "--dir", str(work)],
                      work, procs)  # fmt: skip
        wait_ready(redis, redis_port)
        cached, cached_admin = start_balancer(
            work, servers["distlb"][1], stats_port, procs, "--cache-redis",
            f"redis://127.0.0.1:{redis_port}/0", "--cache-secret-file",
            str(write_secret(work / "cache-secret")),
        )  # fmt: skip
        targets = {
            "distccd pump": (servers["distccd"][1], ",cpp,lzo"),
            "distlb pump": (servers["distlb"][1], ",cpp,lzo"),
            "balancer pump": (balancer, ",cpp,lzo"),
            "balancer plain": (balancer, ",lzo"),
            # Through a balancer with a Redis cache: emptied before each cold build, the
            # warm one right after it (the same tree, the same object directory).
            "cached pump cold": (cached, ",cpp,lzo"),
            "cached pump warm": (cached, ",cpp,lzo"),
            "cached plain cold": (cached, ",lzo"),
            "cached plain warm": (cached, ",lzo"),
        }
        base = {k: v for k, v in os.environ.items() if not k.startswith(("DISTCC_", "INCLUDE_"))}
        base["PATH"] = f"{bin_dir}:{base['PATH']}"
        include_server = start_include_server(bin_dir, base, work)
        shutdown.append(lambda: stop_include_server(bin_dir, {**base, **include_server}))

        def one_build(name: str) -> float:
            port, spec = targets[name]
            env = dict(base, **include_server) if "pump" in name else dict(base)
            env["DISTCC_DIR"] = tempfile.mkdtemp(prefix="distcc-dir-", dir=work)
            env["DISTCC_HOSTS"] = f"127.0.0.1:{port}/{jobs}{spec}"
            env["DISTCC_FALLBACK"] = "0"  # (a failure fails the bench; backoff stays default)
            out = project.out_dir(name.startswith("cached"))
            if name.startswith("cached") and name.endswith("cold"):
                subprocess.run(["redis-cli", "-p", str(redis_port), "FLUSHALL"],
                               check=True, capture_output=True, timeout=30)  # fmt: skip
            cc = f"timeout {CLIENT_TIMEOUT_S} distcc gcc"
            seconds = timed(project.command(jobs, out, cc), project.root, env)
            project.check_and_clean(out, name)
            if name.endswith("cold"):  # (its results are stored in the background)
                wait_stored(cached_admin)
            return seconds

        for name in targets:  # warm-up, not counted
            one_build(name)
        walls: dict[str, list[float]] = {name: [] for name in targets}
        deadline = time.monotonic() + PHASE_LIMIT_S
        # (a cold build and its warm one stay in that order: the pair is one step)
        steps = [n for n in targets if not n.endswith("warm")]
        for index in range(rounds):
            for step in steps if index % 2 == 0 else steps[::-1]:
                for name in (step, step.replace("cold", "warm")) if "cold" in step else (step,):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"builds took longer than {PHASE_LIMIT_S} s")
                    walls[name].append(round(one_build(name), 3))
        return walls
    finally:
        for stop in shutdown:
            stop()
        stop_all(procs)
        stop_all([proc for proc, _ in servers.values()])
        if not os.environ.get("DISTLB_BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)


def wait_stored(admin: int) -> None:
    """Until the cached balancer has stored a result for each miss since the last call
    (or said why not: a backend not sandboxed, or changed)."""
    deadline = time.monotonic() + 60
    while True:
        cache = get_json(admin, "/status")["cache"]
        assert isinstance(cache, dict)
        misses = int(cache["misses"])
        done = sum(int(cache[k]) for k in ("stored", "not_stored_unsandboxed",
                                           "not_stored_changed"))  # fmt: skip
        if done - _SEEN["done"] >= misses - _SEEN["misses"]:
            _SEEN.update(done=done, misses=misses)
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the cached balancer stored {done - _SEEN['done']} of "
                               f"{misses - _SEEN['misses']} missed")  # fmt: skip
        time.sleep(0.05)


_SEEN = {"done": 0, "misses": 0}


def ratio_line(walls: dict[str, list[float]], ours: str, theirs: str, goal: str) -> str:
    paired = [a / b for a, b in zip(walls[ours], walls[theirs], strict=True)]
    return (f"- {ours} / {theirs}: median {statistics.median(paired):.3f} (rounds "
            f"{min(paired):.3f}-{max(paired):.3f}) {goal}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--files", type=int, default=24)
    parser.add_argument("--project", choices=("generated", "git"), default="generated",
                        help="git: git's libgit.a from Debian's source package")  # fmt: skip
    args = parser.parse_args()
    walls = run(args.jobs, args.rounds, args.files, args.project)
    what = "git's libgit.a" if args.project == "git" else f"{args.files} files"
    lines = [
        f"# bench/pump.py: {what}, -j{args.jobs}, {args.rounds} rounds",
        "",
        "| path | median s | rounds (s) |",
        "|---|---:|---|",
        *(
            f"| {name} | {statistics.median(v):.3f} | {', '.join(f'{x:.3f}' for x in v)} |"
            for name, v in walls.items()
        ),
        "",
        ratio_line(walls, "distlb pump", "distccd pump", f"(goal <= {GOAL_RATIO})"),
        ratio_line(walls, "balancer pump", "distlb pump", "(the balancer's hop)"),
        ratio_line(walls, "balancer pump", "balancer plain", "(pump vs plain, no cache)"),
        ratio_line(walls, "cached pump cold", "cached pump warm", "(goal >= 10)"),
        ratio_line(walls, "cached plain cold", "cached plain warm", "(the plain cache's)"),
        ratio_line(walls, "cached plain warm", "cached pump warm", "(a hit without cpp)"),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    name = "pump-git.md" if args.project == "git" else "pump.md"
    (RESULTS_DIR / name).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
