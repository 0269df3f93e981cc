"""Alice's and Bob's builds through balancers that share a result cache: the helpers the
cache tests share (tests/integration/test_cache*.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.distcc import run_make
from tests.support.secrets import farm_secret
from tests.support.servers import BalancerProcess, ServerProcess, StartBalancer, wait_until

MODULES = 23  # + main.c = 24 jobs
MARKER_PREFIX = "m"
"""Keys of the markers beside the entries (cache/result_cache.py): ``m`` + hex."""


def is_entry_key(key: str | bytes) -> bool:
    """Whether a store's key is an entry's (a sha256 in hex), not a marker's."""
    text = key.decode() if isinstance(key, bytes) else key
    return not text.startswith(MARKER_PREFIX)


def entry_keys(client: Any) -> list[bytes]:
    """The entries' keys in a Redis (markers apart)."""
    return [k for k in client.keys("*") if is_entry_key(k)]


def spec(server: ServerProcess) -> str:
    return f"127.0.0.1:{server.port},status={server.stats_port}"


def build(project: Path, balancer: BalancerProcess) -> None:
    result = run_make(project, hosts=f"127.0.0.1:{balancer.port}/8,lzo", jobs=8)
    if result.returncode != 0:
        failed = [e for e in balancer.events() if e.get("level") in ("warning", "error")
                  or (e.get("event") == "job_done" and e.get("outcome") != "ok")]  # fmt: skip
        raise AssertionError(f"{result.stderr}\nthe balancer said: {failed[-10:]}")


def cache_of(balancer: BalancerProcess) -> dict[str, Any]:
    return dict(balancer.status()["cache"])


def wait_stored(balancer: BalancerProcess, count: int) -> None:
    wait_until(lambda: cache_of(balancer)["stored"] >= count, 20, f"{count} results stored")


def cache_balancer(
    start_balancer: StartBalancer, servers: list[ServerProcess], url: str, *extra: str
) -> BalancerProcess:
    """A balancer in front of ``servers`` with the shared cache at ``url`` (and the
    farm's cache secret: :func:`tests.support.secrets.farm_secret`)."""
    args = [a for s in servers for a in ("--backend", spec(s))]
    # A lookup may wait for Redis up to 2 s here: on a loaded test machine a shorter
    # bound turns hits into (correctly counted) bypasses and the ratios into noise.
    balancer = start_balancer(*args, "--cache-redis", url, "--cache-timeout", "2",
                              "--cache-secret-file", str(farm_secret()), *extra)  # fmt: skip
    balancer.wait_healthy(len(servers))
    return balancer
