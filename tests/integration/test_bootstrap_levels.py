"""Issue 19: two bootstrap levels. ``scripts/farm.sh`` installs only what the farm needs
to run and be used; ``scripts/test.sh`` adds the test suite's packages. Both are safe
to run again (here, on a machine already set up: they install nothing)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = ROOT / "scripts" / "bootstrap.sh"
# What a farm needs: Python with venv, what python-lzo and gssapi build against, the
# compilers the servers run, Debian's distcc client, the sandbox, and curl (farm.sh
# waits for the status pages with it).
FARM_NEEDS = {"python3", "python3-venv", "python3-dev", "build-essential", "liblzo2-dev",
              "libkrb5-dev", "gcc", "g++", "distcc", "bubblewrap", "curl"}  # fmt: skip
# Heavy on a workstation, and some start daemons of their own: the tests' world only.
TESTS_ONLY = {"chromium", "haproxy", "dnsmasq", "redis-server", "keepalived", "krb5-kdc",
              "krb5-admin-server", "prometheus", "docker-compose", "iptables", "clang",
              "debootstrap", "buildah"}  # fmt: skip


def _packages(level: str) -> list[str]:
    result = subprocess.run(
        ["bash", str(BOOTSTRAP), "--list", level],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return result.stdout.split()


def test_the_farm_installs_a_short_list_inside_the_test_suites() -> None:
    farm, tests = _packages("farm"), _packages("test")
    assert len(farm) == len(set(farm)) and len(tests) == len(set(tests))
    assert set(farm) < set(tests)
    assert set(farm) >= FARM_NEEDS
    assert set(farm) & TESTS_ONLY == set()
    assert set(tests) >= TESTS_ONLY


def test_each_command_bootstraps_its_own_level() -> None:
    farm_sh = (ROOT / "scripts" / "farm.sh").read_text().splitlines()
    test_sh = (ROOT / "scripts" / "test.sh").read_text().splitlines()
    assert "scripts/bootstrap.sh farm" in farm_sh
    assert "scripts/bootstrap.sh test" in test_sh


def test_an_unknown_level_is_refused() -> None:
    result = subprocess.run(
        ["bash", str(BOOTSTRAP), "workstation"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "unknown level" in result.stderr


@pytest.mark.parametrize("level", ["farm", "test"])
def test_bootstrap_again_installs_nothing(level: str) -> None:
    """(The suite runs after scripts/test.sh's bootstrap: both levels are in place.)"""
    result = subprocess.run(
        ["bash", str(BOOTSTRAP), level],
        capture_output=True, text=True, timeout=300, check=False, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "installing" not in result.stderr
    assert result.stderr == ""


def test_the_venv_holds_exactly_the_lock() -> None:
    """Two machines that run scripts/test.sh install the same versions: what pip sees
    in .venv is the test level's lock and the build tools' lock, and nothing else."""
    result = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), str(ROOT / "scripts" / "lock.py"), "check",
         str(ROOT / "requirements" / "build.txt"), str(ROOT / "requirements" / "test.txt")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
