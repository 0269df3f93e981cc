"""Fair share with real processes: real distcc clients at two addresses (one through a
relay that connects from 127.0.0.2) through one balancer to a real server with few
slots, its compiler a stand-in that takes a fixed time (tests/support/compilers.py).

- While one client floods the farm, a second client's small build is served in
  proportion, not behind every job of the flood (and with ``--fair-share off``, the
  control, it is served behind all of them: the scenario does test the order); also
  with ``--workers 2``, the jobs of both clients spread over both workers.
- A client alone on the farm gets every slot.
- A group of weight 2 (``--fair-groups``) gets two thirds of a farm that it floods
  together with a client of weight 1 (±10 %).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.compilers import write_fake_compilers
from tests.support.distcc import run_distcc
from tests.support.fault_relay import RelayThread
from tests.support.servers import BalancerProcess, StartBalancer, StartServer, wait_until

pytestmark = pytest.mark.integration

FLOODER, OTHER = "127.0.0.1", "127.0.0.2"


@pytest.fixture
def other_address(start_balancer: StartBalancer) -> Iterator[list[RelayThread]]:
    """Relays made by the test (each connects to its balancer from 127.0.0.2)."""
    relays: list[RelayThread] = []
    yield relays
    for relay in relays:
        relay.close()


def _sources(root: Path, name: str, count: int) -> list[str]:
    root.mkdir(mode=0o755)
    for index in range(count):
        (root / f"{name}{index}.c").write_text(f"int {name}{index}(void) {{ return {index}; }}\n")
    return [f"{name}{index}.c" for index in range(count)]


def _build(root: Path, files: list[str], port: int, bin_dir: Path, in_flight: int) -> list[int]:
    """Compile ``files`` with the real client, ``in_flight`` at a time (as make -jN)."""

    def one(name: str) -> int:
        result = run_distcc(
            ["slow-cc", "-c", name, "-o", name.replace(".c", ".o")],
            hosts=f"127.0.0.1:{port}/64",
            cwd=root,
            extra_env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        )
        return result.returncode

    with ThreadPoolExecutor(in_flight) as pool:
        return list(pool.map(one, files))


def _done_order(balancer: BalancerProcess, total: int) -> list[str]:
    """The client of each job, in the order the balancer answered them."""
    wait_until(lambda: len(balancer.events("job_done")) >= total, 30, f"{total} job_done lines")
    done = balancer.events("job_done")
    assert [e["outcome"] for e in done] == ["ok"] * total, done
    return [str(e["client"]) for e in done]


def _farm(
    start_server: StartServer, start_balancer: StartBalancer, shared_tmp: Path,
    slots: int, seconds: float, *flags: str,
) -> tuple[BalancerProcess, Path]:  # fmt: skip
    bin_dir = shared_tmp / "toolchain-fair" / "bin"
    bin_dir.parent.mkdir(mode=0o755)
    write_fake_compilers(bin_dir, shared_tmp / "markers-fair", slow_seconds=seconds)
    server = start_server("--jobs", str(slots), "--compiler", "slow-cc", "--compiler", "gcc",
                          path_prepend=str(bin_dir))  # fmt: skip
    balancer = start_balancer(
        "--backend", f"127.0.0.1:{server.port},status={server.stats_port}",
        "--queue-timeout", "120", "--tail-hedge", "0", "--hedge-min", "120", *flags,
    )  # fmt: skip
    balancer.wait_healthy(1)
    return balancer, bin_dir


@pytest.mark.parametrize(("fair", "workers"), [("on", 1), ("off", 1), ("on", 2)])
def test_a_small_build_is_not_served_behind_a_whole_flood(
    fair: str,
    workers: int,
    start_server: StartServer,
    start_balancer: StartBalancer,
    shared_tmp: Path,
    other_address: list[RelayThread],
) -> None:
    flood_jobs, small_jobs = 24, 4
    balancer, bin_dir = _farm(
        start_server, start_balancer, shared_tmp, 2, 0.4, "--fair-share", fair,
        "--workers", str(workers),
    )  # fmt: skip
    relay = RelayThread(("127.0.0.1", balancer.port), source=OTHER)
    other_address.append(relay)
    flood_files = _sources(shared_tmp / "flood", "f", flood_jobs)
    small_files = _sources(shared_tmp / "small", "s", small_jobs)
    results: dict[str, list[int]] = {}
    flood = threading.Thread(
        target=lambda: results.setdefault(
            "flood", _build(shared_tmp / "flood", flood_files, balancer.port, bin_dir, flood_jobs)
        )
    )
    flood.start()
    try:
        # Alone on the farm, the flood has every slot, and the rest of it waits.
        def flood_waits() -> bool:
            status = balancer.status()
            return bool(status["totals"]["free"] == 0 and status["shares"][0]["waiting"] >= 16)

        wait_until(flood_waits, 60, "the flood on every slot, 16 of its jobs waiting")
        shares = balancer.status()["shares"]
        assert [s["name"] for s in shares] == [FLOODER] and shares[0]["running"] == 2
        results["small"] = _build(shared_tmp / "small", small_files, relay.port, bin_dir, 4)
    finally:
        flood.join(180)
    assert results == {"flood": [0] * flood_jobs, "small": [0] * small_jobs}
    order = _done_order(balancer, flood_jobs + small_jobs)
    assert order.count(OTHER) == small_jobs
    last_small = max(i for i, client in enumerate(order) if client == OTHER)
    flood_after = order[last_small + 1 :].count(FLOODER)
    if fair == "on":
        # Its 4 jobs took the next slots that freed: most of the flood came after.
        assert flood_after >= flood_jobs // 2, order
    else:
        # Longest waiting first: the small build waited behind the whole flood.
        assert flood_after <= 2, order


def test_a_group_of_weight_two_gets_two_thirds_of_a_farm_it_floods(
    start_server: StartServer,
    start_balancer: StartBalancer,
    shared_tmp: Path,
    other_address: list[RelayThread],
) -> None:
    groups = shared_tmp / "groups.toml"
    groups.write_text(f'[double]\nmembers = ["{OTHER}/32"]\nweight = 2\n')
    jobs, in_flight = 40, 12
    balancer, bin_dir = _farm(
        start_server, start_balancer, shared_tmp, 4, 0.3, "--fair-groups", str(groups)
    )
    relay = RelayThread(("127.0.0.1", balancer.port), source=OTHER)
    other_address.append(relay)
    single = _sources(shared_tmp / "single", "a", jobs)
    double = _sources(shared_tmp / "double", "c", jobs)
    with ThreadPoolExecutor(2) as pool:
        built = [
            pool.submit(_build, shared_tmp / "single", single, balancer.port, bin_dir, in_flight),
            pool.submit(_build, shared_tmp / "double", double, relay.port, bin_dir, in_flight),
        ]
        assert [f.result(timeout=300) for f in built] == [[0] * jobs, [0] * jobs]
    order = _done_order(balancer, 2 * jobs)
    # The slots turn over together (one compile time for all), so the answers come in
    # runs of one client: the share is counted over whole rounds while both flood,
    # from the group's second run (past the start, when both shares were new) to the
    # single client's last run before the group's last (after which it floods alone).
    runs = [(client, len(list(group))) for client, group in itertools.groupby(order)]
    second = [i for i, (client, _) in enumerate(runs) if client == OTHER][1]
    last = max(i for i, (client, _) in enumerate(runs) if client == OTHER)
    rounds = runs[second:last]
    assert rounds[-1][0] == FLOODER and len(rounds) >= 6, runs
    group = sum(count for client, count in rounds if client == OTHER)
    share = group / sum(count for _, count in rounds)
    assert abs(share - 2 / 3) <= 0.1 * 2 / 3, (share, runs)
    shares = {s["name"]: s for s in balancer.status()["shares"]}
    assert shares["double"]["weight"] == 2.0 and shares[FLOODER]["weight"] == 1.0
