"""Issue 6: the docker-compose farm is a valid compose file with what it promises.

No Docker engine runs here: Debian's docker-compose (v1) validates and renders the
file without one, and the keepalived config each balancer container renders is
checked with keepalived's own ``-t``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"

pytestmark = pytest.mark.system


def _compose(*args: str) -> str:
    if not shutil.which("docker-compose"):
        pytest.fail("docker-compose is missing: scripts/bootstrap.sh installs Debian's",
                    pytrace=False)  # fmt: skip
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), *args],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_compose_file_is_valid_and_holds_the_farm() -> None:
    services = set(_compose("config", "--services").split())
    assert {"lb-a", "lb-b", "server1", "server2", "server3", "redis", "toxiproxy", "loadgen",
            "chaos"} <= services  # fmt: skip
    rendered = _compose("config")
    assert "ghcr.io/shopify/toxiproxy" in rendered
    assert rendered.count("NET_ADMIN") == 2, "both balancers need NET_ADMIN for the VIP"
    assert "dockerfile: docker/Dockerfile" in rendered
    assert "FROM debian:bookworm" in (ROOT / "docker" / "Dockerfile").read_text()


@pytest.mark.parametrize("node,priority", [("a", 150), ("b", 100)])
def test_balancer_containers_render_a_keepalived_config_keepalived_accepts(
    tmp_path: Path, node: str, priority: int
) -> None:
    if not shutil.which("keepalived"):
        pytest.fail("keepalived is missing: scripts/bootstrap.sh installs it", pytrace=False)
    env = dict(os.environ, NODE=node, PRIORITY=str(priority), SELF_IP="172.30.63.11",
               PEER_IP="172.30.63.12", VIP="172.30.63.100/24")  # fmt: skip
    rendered = subprocess.run(
        ["sh", str(ROOT / "docker" / "render-keepalived.sh"),
         str(ROOT / "configs" / "keepalived" / "keepalived.conf.template")],
        env=env, capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    assert "{{" not in rendered
    assert "unicast_peer" in rendered and f"priority {priority}" in rendered
    conf = tmp_path / "keepalived.conf"
    conf.write_text(rendered)
    check = subprocess.run(["keepalived", "-t", "-f", str(conf)], capture_output=True,
                           text=True, timeout=30, check=False)  # fmt: skip
    assert check.returncode == 0, check.stderr


def test_shipped_pair_configs_are_accepted_by_keepalived() -> None:
    if not shutil.which("keepalived"):
        pytest.fail("keepalived is missing: scripts/bootstrap.sh installs it", pytrace=False)
    for name in ("keepalived-a.conf", "keepalived-b.conf"):
        conf = ROOT / "configs" / "keepalived" / name
        check = subprocess.run(["keepalived", "-t", "-f", str(conf)], capture_output=True,
                               text=True, timeout=30, check=False)  # fmt: skip
        assert check.returncode == 0, f"{name}: {check.stderr}"
