"""The configs we ship load as they are, with the flags' names as keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import load

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize(
    "path", sorted([CONFIGS / "server.toml", *(CONFIGS / "farm").glob("server-*.toml")]), ids=str
)
def test_shipped_server_config_loads(path: Path) -> None:
    config = load(["--config", str(path)])
    assert config.port > 0 and config.stats_port > 0
    assert config.job_lifetime > 0
    assert config.networks()


def test_farm_servers_use_distinct_ports() -> None:
    ports = []
    for path in (CONFIGS / "farm").glob("server-*.toml"):
        config = load(["--config", str(path)])
        ports += [config.port, config.stats_port]
    assert len(ports) == len(set(ports)) >= 4


@pytest.mark.parametrize(
    "path", [CONFIGS / "balancer.toml", CONFIGS / "farm" / "balancer.toml"], ids=str
)
def test_shipped_balancer_config_loads(path: Path) -> None:
    from balancer.cli import load as load_balancer

    config = load_balancer(["--config", str(path)])
    assert config.backend_specs()
    assert config.port > 0 and config.admin_port > 0


def test_the_shipped_fair_groups_example_loads() -> None:
    from balancer.cli import load as load_balancer

    path = CONFIGS / "fair-groups.toml"
    config = load_balancer(["--config", str(CONFIGS / "balancer.toml"), "--fair-groups", str(path)])
    groups_file = config.fair_groups_file()
    assert groups_file is not None
    groups = groups_file.groups()
    assert groups.who("10.0.9.7", None).weight == 0.25
    assert groups.who("10.0.1.2", "alice@EXAMPLE.COM").name == "release"


ROOT = CONFIGS.parent
# Runtime dependencies that PyPI has no Linux wheel for build against these headers.
BUILD_HEADERS = ("liblzo2-dev", "libkrb5-dev")


@pytest.mark.parametrize("path", ["scripts/bootstrap.sh", "docker/Dockerfile"])
def test_every_install_path_has_the_headers_the_runtime_builds_against(path: str) -> None:
    text = (ROOT / path).read_text()
    missing = [package for package in BUILD_HEADERS if package not in text.split()]
    assert not missing, f"{path} does not install {missing}"
