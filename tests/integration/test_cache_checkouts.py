"""Issue 27 acceptance: Alice, Bob and Carol build one multi-directory project, each in a
directory of their own (CMake-style: every file by its absolute path), with the real
distcc client, through balancers that share a real Redis, over sandboxed distlb servers:

- without -g, and with -g and ``-ffile-prefix-map=$PWD=.``: Bob's and Carol's builds are
  answered from Alice's results (>= 95 % hits), every object is the one a build of
  their own in their own directory gives, and the warnings replayed name their files;
- with -g alone: no hits, every miss counted as differing from a stored job only by
  paths; with ``--cache-share-across-dirs``: hits, and each object is Alice's: it
  differs from Carol's own in its debug sections only, which record Alice's directory.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.cache_builds import cache_balancer, cache_of, wait_stored
from tests.support.checkouts import DEBUG_SECTIONS, differing_sections
from tests.support.distcc import run_make
from tests.support.projects import tree_object, tree_sources, write_tree_project
from tests.support.redis import RedisServer
from tests.support.secrets import farm_secret
from tests.support.servers import (
    BalancerProcess,
    ServerProcess,
    StartBalancer,
    StartServer,
    wait_until,
)

pytestmark = pytest.mark.integration

USERS = ("alice/proj", "bob/src/work/tree", "carol/x")
PLAIN = "-O2 -Wall"
MAPPED = "-g -O2 -Wall -ffile-prefix-map=$(ROOT)=."
DEBUG = "-g -O2 -Wall"


@pytest.fixture
def backends(start_server: StartServer) -> list[ServerProcess]:
    return [start_server("--jobs", "4") for _ in range(2)]


def _build(project: Path, balancer: BalancerProcess, cflags: str) -> str:
    """The project built through ``balancer``; the client's stderr."""
    result = run_make(project, hosts=f"127.0.0.1:{balancer.port}/8,lzo", jobs=8, cflags=cflags)
    assert result.returncode == 0, result.stderr
    return result.stderr


def _local(project: Path, source: Path, cflags: str, two_step: bool) -> bytes:
    """The object of ``source`` as its owner's own build makes it, in their directory
    (``two_step``: preprocessed, then compiled, as any distcc build does it: with -g
    the columns macro expansion moves are in the debug info)."""
    flags = cflags.replace("$(ROOT)", str(project)).split()
    include = f"-I{project / 'include'}"
    out = project / ".local.o"
    if two_step:
        text = project / ".local.i"
        subprocess.run(["gcc", *flags, include, "-E", str(source), "-o", str(text)],
                       cwd=project, check=True, timeout=60)  # fmt: skip
        command = ["gcc", *flags, "-c", str(text), "-o", str(out)]
    else:
        command = ["gcc", *flags, include, "-c", str(source), "-o", str(out)]
    subprocess.run(command, cwd=project, check=True, timeout=60)
    return out.read_bytes()


def _assert_own_objects(project: Path, cflags: str, two_step: bool) -> None:
    for source in tree_sources(project):
        built = tree_object(project, source).read_bytes()
        assert built == _local(project, source, cflags, two_step), source


def _warnings_name_only(stderr: str, project: Path, others: list[Path]) -> None:
    assert f"{project}/include/common.h" in stderr, stderr[:2000]
    for other in others:
        assert str(other) not in stderr, (other, stderr[:2000])


@pytest.mark.parametrize(("cflags", "two_step"), [(PLAIN, False), (MAPPED, True)],
                         ids=["no-debug", "debug-prefix-map"])  # fmt: skip
def test_three_checkouts_share_results_and_each_gets_its_own_objects(
    start_balancer: StartBalancer,
    backends: list[ServerProcess],
    redis_server: RedisServer,
    tmp_path: Path,
    cflags: str,
    two_step: bool,
) -> None:
    balancers = [cache_balancer(start_balancer, backends, redis_server.url) for _ in range(2)]
    projects = [write_tree_project(tmp_path / user) for user in USERS]
    jobs = len(tree_sources(projects[0]))

    stderr = _build(projects[0], balancers[0], cflags)
    _warnings_name_only(stderr, projects[0], projects[1:])
    _assert_own_objects(projects[0], cflags, two_step)
    wait_stored(balancers[0], jobs)

    for index, project in enumerate(projects[1:], start=1):
        balancer = balancers[index % 2]
        before = cache_of(balancer)
        stderr = _build(project, balancer, cflags)
        after = cache_of(balancer)
        hits = after["hits"] - before["hits"]
        assert hits >= 0.95 * jobs, (hits, jobs, after)
        assert after["unmappable"] == 0, after
        _warnings_name_only(stderr, project, [p for p in projects if p != project])
        _assert_own_objects(project, cflags, two_step)


def test_debug_builds_without_maps_share_only_when_the_operator_says_so(
    start_balancer: StartBalancer,
    backends: list[ServerProcess],
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    apart = cache_balancer(start_balancer, backends, redis_server.url)
    alice, bob, carol = (write_tree_project(tmp_path / user) for user in USERS)
    jobs = len(tree_sources(alice))
    _build(alice, apart, DEBUG)
    _assert_own_objects(alice, DEBUG, two_step=True)
    wait_stored(apart, jobs)

    before = cache_of(apart)
    _build(bob, apart, DEBUG)
    # (each miss is checked for a path miss in the background, just after its lookup)
    wait_until(lambda: cache_of(apart)["path_misses"] - before["path_misses"] >= jobs, 20,
               "every miss counted")  # fmt: skip
    after = cache_of(apart)
    assert after["hits"] == before["hits"], after  # nobody else's directory in Bob's objects
    assert after["path_misses"] - before["path_misses"] == jobs, after  # what sharing would gain
    _assert_own_objects(bob, DEBUG, two_step=True)

    # Opted in: Carol's jobs are answered from Alice's (or Bob's) entries.
    shared = cache_balancer(start_balancer, backends, redis_server.url, "--cache-share-across-dirs")
    shutil.rmtree(alice / "obj")
    _build(alice, shared, DEBUG)  # (an opted-in key is another key: Alice stores under it)
    wait_stored(shared, jobs)
    before = cache_of(shared)
    _build(carol, shared, DEBUG)
    hits = cache_of(shared)["hits"] - before["hits"]
    assert hits >= 0.95 * jobs, (hits, cache_of(shared))
    recorded_alice = 0
    for source in tree_sources(carol):
        got = tree_object(carol, source).read_bytes()
        alices = _local(alice, alice / source.relative_to(carol), DEBUG, two_step=True)
        own = _local(carol, source, DEBUG, two_step=True)
        if got == own:
            continue  # (a miss Carol's own server compiled)
        assert got == alices, source  # what differs is exactly Alice's directory...
        differ = differing_sections(got, own, tmp_path)
        assert differ and all(name.startswith(DEBUG_SECTIONS) for name in differ), differ
        info = subprocess.run(["readelf", "--debug-dump=info", str(tree_object(carol, source))],
                              capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert f"DW_AT_comp_dir    : (indirect line string, offset: 0): {alice}" in info or (
            str(alice) in info and str(carol) not in info
        ), info[:1500]
        recorded_alice += 1
    assert recorded_alice >= 0.95 * jobs


def test_a_servers_disk_cache_follows_the_same_rules(
    start_server: StartServer, shared_tmp: Path, tmp_path: Path
) -> None:
    """The server's --cache-dir keys jobs as the balancer does (one implementation in
    cache/): Bob's build without -g is answered from Alice's, his -g build is not (each
    miss counted in /status as a path miss), and with --cache-share-across-dirs it is."""
    secret = ("--cache-secret-file", str(farm_secret()))
    server = start_server("--jobs", "4", "--cache-dir", str(shared_tmp / "c1"), *secret)
    hosts = f"127.0.0.1:{server.port}/4,lzo"
    alice, bob = (write_tree_project(tmp_path / user) for user in USERS[:2])
    jobs = len(tree_sources(alice))

    def build(project: Path, cflags: str, where: str = hosts) -> None:
        shutil.rmtree(project / "obj", ignore_errors=True)
        result = run_make(project, hosts=where, jobs=4, cflags=cflags)
        assert result.returncode == 0, result.stderr

    def stored(target: ServerProcess, count: int) -> None:
        wait_until(lambda: target.status()["cache"]["stored"] >= count, 20, "entries stored")

    build(alice, PLAIN)
    stored(server, jobs)
    build(bob, PLAIN)
    _assert_own_objects(bob, PLAIN, two_step=False)
    assert server.status()["cache"]["hits"] == jobs
    build(alice, DEBUG)
    stored(server, 2 * jobs)
    build(bob, DEBUG)
    wait_until(lambda: server.status()["cache"]["path_misses"] >= jobs, 20, "misses counted")
    cache = server.status()["cache"]
    assert (cache["hits"], cache["path_misses"]) == (jobs, jobs), cache
    _assert_own_objects(bob, DEBUG, two_step=True)

    sharing = start_server("--jobs", "4", "--cache-dir", str(shared_tmp / "c2"), *secret,
                           "--cache-share-across-dirs")  # fmt: skip
    where = f"127.0.0.1:{sharing.port}/4,lzo"
    build(alice, DEBUG, where)
    stored(sharing, jobs)
    build(bob, DEBUG, where)
    assert sharing.status()["cache"]["hits"] == jobs
