"""Issue 25: the lock in requirements/ pins every dependency, with hashes, inside the
ranges pyproject.toml declares, and the two levels agree on every version they share.
(That the venv holds exactly the lock: tests/integration/test_bootstrap_levels.py.)"""

from __future__ import annotations

import importlib.util
import platform
import re
import tomllib
from importlib import metadata
from pathlib import Path
from types import ModuleType

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ROOT / "requirements"


def _lock_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lock", ROOT / "scripts" / "lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lock = _lock_module()


def _pins(name: str, environment: dict[str, str] | None = None) -> dict[str, str]:
    pins: dict[str, str] = lock.read_pins(LOCKS / f"{name}.txt", environment)
    assert pins, f"requirements/{name}.txt pins nothing"
    return pins


def _requirements(*, extra: str | None) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return [Requirement(text) for text in found]


def _assert_satisfied(requirements: list[Requirement], pins: dict[str, str], lock: str) -> None:
    for requirement in requirements:
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert name in pins, f"{requirement} is not in requirements/{lock}.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements/{lock}.txt pins {name}=={pins[name]}, outside {requirement}"
        )


@pytest.mark.parametrize("name", ["build", "farm", "image", "test", "tools"])
def test_every_pin_of_the_lock_carries_its_hashes(name: str) -> None:
    text = (LOCKS / f"{name}.txt").read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text)
    pinned = [block for block in blocks if lock.PIN.match(block)]
    assert len(pinned) == len(lock.PIN.findall(text)) and _pins(name)
    for block in pinned:
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", block), block.splitlines()[0]
        lines = [line for line in block.splitlines() if not line.lstrip().startswith("#")]
        assert not any(line.startswith("-e") or "file:" in line for line in lines), block


def test_the_farm_lock_holds_the_projects_dependencies_in_their_ranges() -> None:
    _assert_satisfied(_requirements(extra=None), _pins("farm"), "farm")


def test_the_test_lock_holds_the_dependencies_and_the_test_extra_in_their_ranges() -> None:
    pins = _pins("test")
    _assert_satisfied(_requirements(extra=None), pins, "test")
    _assert_satisfied(_requirements(extra="test"), pins, "test")


@pytest.mark.parametrize("level", ["farm", "image"])
def test_the_farm_and_the_image_take_the_test_levels_versions(level: str) -> None:
    pins, tests = _pins(level), _pins("test")
    assert set(pins) < set(tests)
    assert {name: tests[name] for name in pins} == pins


def test_the_image_lock_is_the_farms_and_the_chaos_scripts() -> None:
    _assert_satisfied(_requirements(extra=None), _pins("image"), "image")
    _assert_satisfied(_requirements(extra="chaos"), _pins("image"), "image")


def test_the_build_tools_agree_with_the_test_lock_and_satisfy_their_inputs() -> None:
    build, tests = _pins("build"), _pins("test")
    assert {name: build[name] for name in set(build) & set(tests)} == {
        name: tests[name] for name in set(build) & set(tests)
    }
    inputs = [
        Requirement(line.split("#")[0])
        for line in (LOCKS / "build.in").read_text().splitlines()
        if line.split("#")[0].strip()
    ]
    assert {req.name.lower() for req in inputs} >= {"pip", "setuptools"}
    _assert_satisfied(inputs, build, "build")


def _environment(python: str) -> dict[str, str]:
    environment = {key: str(value) for key, value in default_environment().items()}
    environment |= {"python_full_version": python, "python_version": python.rsplit(".", 1)[0]}
    return environment


@pytest.mark.parametrize(
    "python",
    [platform.python_version(), "3.11.2"],
    ids=["this interpreter", "Debian 12's python3"],
)
def test_whatever_a_locked_package_needs_is_locked_too(python: str) -> None:
    """Closed under dependencies, for this interpreter and for Debian 12's 3.11.2 (what
    the image and a fresh machine run): redis needs async-timeout before 3.11.3, which
    a lock resolved on 3.11.7 alone had left out. (Read from the installed packages'
    own metadata: every locked package is installed here.)"""
    environment = _environment(python)
    pins = _pins("test", environment) | _pins("build", environment)
    for dist in metadata.distributions():
        name = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
        if name not in pins:
            continue
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker and not requirement.marker.evaluate(environment | {"extra": ""}):
                continue
            _assert_satisfied([requirement], pins, f"test/build (for {name}, Python {python})")


def test_the_projects_build_backend_is_in_the_build_lock() -> None:
    build_system = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]
    _assert_satisfied([Requirement(r) for r in build_system["requires"]], _pins("build"), "build")


def test_the_operators_constraints_file_is_the_farm_lock() -> None:
    """requirements/constraints.txt (for ``pip install -c`` of the wheel) is what
    scripts/update-deps writes from the farm lock: never out of date."""
    written = (LOCKS / "constraints.txt").read_text()
    assert written == lock.constraints(LOCKS / "farm.txt")
