"""Backends found in DNS (issue 31), with a real DNS server (dnsmasq) and real servers:
a real build runs through the balancer while the test adds a server to the SRV records,
removes one (its jobs in flight complete) and makes the DNS server fail for a while:
no job fails, none is compiled locally, every object equals a local compile's; the new
server gets jobs; /status says where each backend came from.

The servers listen on their own loopback addresses (127.0.0.41-43) at one port, as a
farm's machines would; their compiles wait at a gate (tests/support/compilers.py
``gate-cc``) until the test has done its changes, so the build spans them all.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.chromium import LivePage
from tests.support.distcc import distcc_env
from tests.support.dns import Dnsmasq
from tests.support.projects import assert_identical_to_local, write_c_project
from tests.support.servers import (
    BalancerProcess,
    StartBalancer,
    StartServer,
    free_port_pair,
    wait_until,
)

pytestmark = pytest.mark.integration

DOMAIN = "farm.test"
ADDRESSES = ("127.0.0.41", "127.0.0.42", "127.0.0.43")
MODULES = 15


@pytest.fixture
def dns() -> Iterator[Dnsmasq]:
    server = Dnsmasq(DOMAIN)
    yield server
    server.stop()


@pytest.fixture
def gate(fake_compilers: tuple[Path, Path]) -> Iterator[Path]:
    bin_dir, _ = fake_compilers
    yield bin_dir
    (bin_dir / "gate-cc.open").touch()  # (whatever happened: no compile left waiting)


def _records(port: int, addresses: tuple[str, ...]) -> list[str]:
    """A host record and an SRV record per server (``_distcc._tcp.farm.test``)."""
    records = []
    for address in addresses:
        host = f"s{address.rsplit('.', 1)[1]}.{DOMAIN}"
        records += [f"--host-record={host},{address}",
                    f"--srv-host=_distcc._tcp.{DOMAIN},{host},{port},0,10"]  # fmt: skip
    return records


def _backends(balancer: BalancerProcess) -> dict[str, dict[str, object]]:
    return {str(b["name"]): b for b in balancer.status()["backends"]}


def test_a_build_runs_on_while_servers_come_and_go_in_dns(
    start_server: StartServer,
    start_balancer: StartBalancer,
    dns: Dnsmasq,
    gate: Path,
    tmp_path: Path,
) -> None:
    port = free_port_pair()
    for address in ADDRESSES:
        start_server(
            "--listen", address, "--port", str(port), "--stats-port", str(port + 1),
            "--jobs", "2", "--compiler", "gate-cc", "--compiler", "gcc", path_prepend=str(gate),
        )  # fmt: skip

    def status(address: str) -> dict[str, Any]:
        url = f"http://{address}:{port + 1}/status"
        with urllib.request.urlopen(url, timeout=10) as reply:
            return dict(json.load(reply))

    first, second, third = (f"{a}:{port}" for a in ADDRESSES)
    dns.start(_records(port, ADDRESSES[:2]))
    balancer = start_balancer(
        "--backends-from", DOMAIN, "--dns-server", dns.server, "--dns-min-interval", "0.3",
        "--dns-max-interval", "2", "--allow-compiler", "gate-cc", "--queue-timeout", "120",
    )  # fmt: skip
    balancer.wait_healthy(2)
    assert set(_backends(balancer)) == {first, second}
    assert {b["source"] for b in _backends(balancer).values()} == {f"srv:{DOMAIN}"}
    page = LivePage(f"http://127.0.0.1:{balancer.stats_port}/")
    try:
        row = f"document.querySelector('#backends tr[data-backend=\"{first}\"]')"
        page.wait_for(f"{row} && {row}.cells[0].textContent.includes('(srv:{DOMAIN})')", 30,
                      "the dashboard names the backend's source")  # fmt: skip
    finally:
        page.close()

    project = write_c_project(tmp_path / "proj", modules=MODULES)
    env = distcc_env(f"127.0.0.1:{balancer.port}/12", fallback=False)
    env["PATH"] = f"{gate}:{env['PATH']}"
    make = subprocess.Popen(
        ["timeout", "300", "make", "-j12", "CC=distcc gate-cc"], cwd=project, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        # Both servers full (their compiles held at the gate), more jobs waiting.
        wait_until(lambda: balancer.totals()["free"] == 0 and balancer.totals()["in_flight"] >= 4,
                   60, "the first two servers full")  # fmt: skip
        # A third server appears in the records: checked, then given the waiting jobs.
        dns.start(_records(port, ADDRESSES))
        wait_until(lambda: third in _backends(balancer), 30, "the new server discovered")
        wait_until(lambda: status(ADDRESSES[2])["busy"] >= 1, 60, "jobs on it")
        # The first leaves the records: no new jobs; its two held jobs finish later.
        dns.start(_records(port, ADDRESSES[1:]))
        wait_until(lambda: first not in _backends(balancer), 30, "the first one drained")
        assert status(ADDRESSES[0])["busy"] == 2
        # DNS fails for a while: the farm stays as it was.
        failures = balancer.status()["discovery"][f"srv:{DOMAIN}"]["failures"]
        dns.stop()
        wait_until(lambda: balancer.status()["discovery"][f"srv:{DOMAIN}"]["failures"]
                   >= failures + 2, 30, "DNS failing")  # fmt: skip
        assert set(_backends(balancer)) == {second, third}
        dns.start(_records(port, ADDRESSES[1:]))
        (gate / "gate-cc.open").touch()
        _, stderr = make.communicate(timeout=300)
    finally:
        if make.poll() is None:
            make.kill()
            make.wait()
    assert make.returncode == 0, stderr
    assert_identical_to_local(project)
    compiles = MODULES + 1
    done = wait_until(lambda: (d := balancer.events("job_done")) and len(d) >= compiles and d,
                      10, "every job_done line")  # fmt: skip
    assert [e["outcome"] for e in done] == ["ok"] * compiles  # (none compiled locally)
    counts = [status(address)["counters"]["ok"] for address in ADDRESSES]
    assert sum(counts) == compiles and counts[0] == 2 and counts[2] >= 1, counts
    discovery = balancer.status()["discovery"][f"srv:{DOMAIN}"]
    assert discovery["backends"] == 2 and discovery["last_error"] == ""
