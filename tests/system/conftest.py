"""Fixtures for tests/system: a farm in network namespaces, always removed afterwards."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.netns import Topology, namespaces_unavailable, sweep_leftovers
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


@pytest.fixture
def netfarm(netns_ready: None) -> Iterator[NetFarm]:
    """Namespaces cl, lba, lbb, s1-s3 on one bridge; nothing started in them yet."""
    run_dir = Path(tempfile.mkdtemp(prefix="distlb-system-"))
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
