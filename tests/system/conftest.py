"""Fixtures for tests/system: a farm in network namespaces, always removed afterwards."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.netns import Topology, namespaces_unavailable, pid_alive, sweep_leftovers
from tests.system.farm import HOSTS, NetFarm


@pytest.fixture(scope="session")
def netns_ready() -> None:
    """Skip where namespaces cannot be made; fail where a needed program is missing."""
    reason = namespaces_unavailable()
    if reason:
        pytest.skip(reason)
    missing = [tool for tool in ("keepalived", "iptables", "tc", "curl") if not shutil.which(tool)]
    if missing:
        pytest.fail(
            f"missing {missing}: the system tests need them (scripts/bootstrap.sh installs "
            "keepalived, iptables, iproute2 and curl)",
            pytrace=False,
        )
    sweep_leftovers()
    _sweep_run_dirs()


RUN_DIR_PREFIX = "distlb-system-"


def _sweep_run_dirs() -> None:
    """Remove the run dirs of earlier runs that were killed before their cleanup."""
    for path in Path(tempfile.gettempdir()).glob(f"{RUN_DIR_PREFIX}*-*"):
        owner = path.name[len(RUN_DIR_PREFIX) :].split("-")[0]
        if owner.isdigit() and not pid_alive(int(owner)):
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def netfarm(netns_ready: None) -> Iterator[NetFarm]:
    """Namespaces cl, lba, lbb, s1-s3 on one bridge; nothing started in them yet."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"{RUN_DIR_PREFIX}{os.getpid()}-"))
    run_dir.chmod(0o755)
    topo = Topology(run_dir=run_dir, hosts=dict(HOSTS))
    try:
        topo.create()
        yield NetFarm(topo=topo, run_dir=run_dir)
    finally:
        try:
            topo.destroy()
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
