"""Issue 6: slow, lossy and black-holed servers behind the keepalived pair.

s1 is reached through FaultRelayForTests (200 ms added each way), loses 5 % of its
packets each way (iptables ``-m statistic``) and has a 2 Mbit/s link (``tc tbf``);
s2 is black-holed (iptables DROP: packets vanish, nothing answers); s3 is healthy.
A build through the VIP must finish with correct objects, the balancer must take s2
out of rotation and give s1 less work than s3.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.projects import write_c_project
from tests.support.servers import wait_until
from tests.system.farm import (
    SERVERS,
    NetFarm,
    assert_objects_identical,
    count_local_fallbacks,
    start_pair,
)

pytestmark = pytest.mark.system

MODULES = 47  # + main.c = 48 jobs
DELAY_MS = 200
LOSS = 0.05
RATE = "2mbit"


def _lossy(farm: NetFarm, host: str, probability: float) -> None:
    for chain, way in (("INPUT", "-i"), ("OUTPUT", "-o")):
        farm.topo.iptables(host, "-A", chain, way, "eth0", "-m", "statistic", "--mode",
                           "random", "--probability", str(probability), "-j", "DROP")  # fmt: skip


def _black_hole(farm: NetFarm, host: str) -> None:
    farm.topo.iptables(host, "-A", "INPUT", "-i", "eth0", "-j", "DROP")
    farm.topo.iptables(host, "-A", "OUTPUT", "-o", "eth0", "-j", "DROP")


def _narrow(farm: NetFarm, host: str) -> None:
    tbf = ["tbf", "rate", RATE, "burst", "32kb", "latency", "400ms"]
    farm.topo.exec(host, ["tc", "qdisc", "add", "dev", "eth0", "root", *tbf])
    # and the bridge's side, towards the server
    bridge_port = farm.topo.port_name(host)
    farm.topo.exec_bridge(["tc", "qdisc", "add", "dev", bridge_port, "root", *tbf])


def test_slow_lossy_and_black_holed_servers_build_correctly_and_are_ranked(
    netfarm: NetFarm,
) -> None:
    farm = netfarm
    project = write_c_project(farm.run_dir / "proj", modules=MODULES)
    for host in SERVERS:
        farm.start_server(host)
    farm.wait_servers()
    farm.start_relay("s1", delay_ms=DELAY_MS)
    specs = {
        "s1": farm.backend_spec("s1", relayed=True),
        "s2": farm.backend_spec("s2"),
        "s3": farm.backend_spec("s3"),
    }
    start_pair(farm, list(specs.values()))
    _lossy(farm, "s1", LOSS)
    _narrow(farm, "s1")
    _black_hole(farm, "s2")

    build = farm.start_build(project)
    rc, _, err, build_s = farm.finish_build(build)
    assert rc == 0, err[-3000:]
    assert_objects_identical(project)

    def backend(balancer: str, host: str) -> dict[str, Any]:
        status = farm.status(balancer)
        assert status is not None, f"no /status from {balancer}"
        name = specs[host].split(",")[0]
        found = [b for b in status["backends"] if b["name"] == name]
        assert found, f"no backend {name} in {json.dumps(status)[:2000]}"
        return dict(found[0])

    # Both balancers probe every server; the VIP's holder did the work (on a loaded
    # machine a blinking /healthz may have moved the VIP, so count both).
    for balancer in ("lba", "lbb"):
        wait_until(lambda b=balancer: backend(b, "s2")["state"] == "down", 30,
                   f"s2 out of rotation on {balancer}", 0.2)  # fmt: skip
    seen = {host: backend("lba", host) for host in SERVERS}
    ok = {host: sum(int(backend(b, host)["ok"]) for b in ("lba", "lbb")) for host in SERVERS}
    print(f"\nfaults: build took {build_s:.1f} s, {count_local_fallbacks(err)} local fallbacks, "
          f"VIP on {farm.vip_holder()}")  # fmt: skip
    for host, b in seen.items():
        print(
            f"  {host}: state={b['state']} ok={ok[host]} (both balancers) on lbA: "
            f"failures={b['failures']} p50_ms={b['p50_ms']} last_error={b['last_error']}"
        )
    print(f"  lbA totals: {(farm.status('lba') or {}).get('totals')}")
    assert seen["s2"]["state"] == "down"
    assert ok["s1"] < ok["s3"], "the slow server got as much work as the healthy one"
