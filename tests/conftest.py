"""Shared fixtures: real servers on loopback, the real distcc client, sample projects."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis  # noqa: F401 (imported at start, never at the summary: see below)
import pytest

from tests.support.compilers import write_fake_compilers
from tests.support.projects import write_c_project, write_cpp_project
from tests.support.redis import RedisServer
from tests.support.servers import (
    BalancerProcess,
    Distccd,
    ServerProcess,
    StartBalancer,
    StartServer,
)

# Python 3.11.7 can fail "AST constructor recursion depth mismatch" when hypothesis's
# pytest plugin imports hypothesis only at the terminal summary, after tests that ran
# event loops in other threads; importing it up front avoids that.


def _shared_dir(prefix: str) -> Path:
    # Compilers run as an unprivileged user when the tests run as root, so every
    # directory they touch must be reachable by that user (pytest's are not).
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temp dir readable by the compile user; removed afterwards."""
    path = _shared_dir("distlb-test-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def server_tmp(shared_tmp: Path) -> Path:
    """The --tmp-dir of a server under test: empty again after every job."""
    path = shared_tmp / "server-tmp"
    path.mkdir()
    path.chmod(0o1777)
    return path


LOG_LINES_ON_FAILURE = 60


def _logged_processes(request: pytest.FixtureRequest) -> list[ServerProcess]:
    """The daemons a test started, whose last lines a failure report shows."""
    node: Any = request.node
    if not hasattr(node, "distlb_processes"):
        node.distlb_processes = []
    found: list[ServerProcess] = node.distlb_processes
    return found


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed test's report ends with the last lines each of its daemons logged (a
    flaky failure in CI is then explained by the run that met it)."""
    report = yield
    if report.failed and call.when == "call":
        for proc in getattr(item, "distlb_processes", []):
            lines = [line[:400] for line in list(proc.lines)[-LOG_LINES_ON_FAILURE:]]
            report.sections.append((f"Captured log of {proc.proc.args[0]} pid {proc.proc.pid}",
                                    "\n".join(lines)))  # fmt: skip
    return report


@pytest.fixture
def start_server(server_tmp: Path, request: pytest.FixtureRequest) -> Iterator[StartServer]:
    started: list[ServerProcess] = []
    logged = _logged_processes(request)

    def start(
        *args: str, path_prepend: str | None = None, prefix: list[str] | None = None
    ) -> ServerProcess:
        proc = ServerProcess.start(
            list(args), tmp_dir=server_tmp, path_prepend=path_prepend, prefix=prefix
        )
        started.append(proc)
        logged.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def c_project(tmp_path: Path) -> Path:
    return write_c_project(tmp_path / "cproj")


@pytest.fixture
def cpp_project(tmp_path: Path) -> Path:
    return write_cpp_project(tmp_path / "cppproj")


REAL_TOOLS = ("distcc", "distccd", "gcc", "g++", "lsdistcc")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests that start real processes fail at once, and clearly, when a real tool is
    missing; unit tests need none of them and run anyway."""
    if item.get_closest_marker("integration") or item.get_closest_marker("system"):
        missing = [tool for tool in REAL_TOOLS if not shutil.which(tool)]
        if missing:
            pytest.fail(
                f"missing real tools {missing}: run scripts/bootstrap.sh "
                "(it installs Debian's distcc, gcc and g++)",
                pytrace=False,
            )


@pytest.fixture(scope="session", autouse=True)
def _no_distcc_hosts_from_outside() -> None:
    os.environ.pop("DISTCC_HOSTS", None)


@pytest.fixture
def distccd() -> Iterator[Distccd]:
    daemon = Distccd(jobs=2)
    yield daemon
    daemon.stop()


@pytest.fixture
def fake_compilers(shared_tmp: Path) -> tuple[Path, Path]:
    """(bin dir to put on PATH, markers dir) with hang-cc and slow-cc. The bin dir is in
    a toolchain dir of its own, which is all of the test that a sandbox shows them."""
    bin_dir, markers = shared_tmp / "toolchain" / "bin", shared_tmp / "markers"
    bin_dir.parent.mkdir(mode=0o755)
    write_fake_compilers(bin_dir, markers)
    return bin_dir, markers


@pytest.fixture
def start_balancer(request: pytest.FixtureRequest) -> Iterator[StartBalancer]:
    started: list[BalancerProcess] = []
    logged = _logged_processes(request)

    def start(*args: str, config_file: Path | None = None) -> BalancerProcess:
        proc = BalancerProcess.start_balancer(list(args), config_file)
        started.append(proc)
        logged.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def distccd_stats() -> Iterator[Distccd]:
    daemon = Distccd(jobs=2, stats=True)
    yield daemon
    daemon.stop()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


# With pytest-xdist (scripts/test.sh runs two workers), tests that share something of
# the machine run in one worker, one after the other: the system tests' network
# namespaces have fixed names and addresses ("netns"), scripts/farm.sh's farm takes
# fixed ports ("fixed-ports"), and the image's two tests share one build ("image").
# Every other test is a unit of its own: it takes port 0, temp dirs of its own and
# (tests/support/servers.py) job uids of its worker's own. The longest groups are
# collected first, so that no worker is left with one of them at the end.
# (xdist's own ``xdist_group`` mark with ``--dist loadgroup`` grouped nothing here,
# pytest 9.2 with xdist 3.8: the two tests of one group ran in two workers. A scheduler
# of our own groups by path instead.)
SHARED = {
    "tests/system/test_image.py": "image",
    "tests/system/test_failover.py": "netns",
    "tests/system/test_faults.py": "netns",
    "tests/integration/test_farm.py": "fixed-ports",
}
FIRST = ("image", "netns")


def _group(nodeid: str) -> str | None:
    return SHARED.get(nodeid.split("::")[0])


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class SharedGroups(LoadScopeScheduling):  # type: ignore[misc]  # (xdist is untyped)
        def _split_scope(self, nodeid: str) -> str:
            return _group(nodeid) or nodeid

    return SharedGroups(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def order(item: pytest.Item) -> int:
        group = _group(item.nodeid)
        return FIRST.index(group) if group in FIRST else len(FIRST)

    items.sort(key=order)  # (stable: the rest keep their order)
