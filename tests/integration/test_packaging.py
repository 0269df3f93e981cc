"""Issue 19: ``python -m build`` makes an sdist and, from it, a wheel; installed in a
clean venv, the wheel gives every console script working (``--help``, ``--version``)
with its package data (the dashboard, the judge's option table) and the example
configs and systemd units under ``share/distlb/``. The version is pyproject.toml's."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
SCRIPTS = sorted(PYPROJECT["project"]["scripts"])
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", ".farm", "build", "dist", "*.egg-info", "__pycache__", ".*_cache",
    ".hypothesis", "results",
)  # fmt: skip
# Every file of configs/ (the units under systemd/), and the constraints file: found
# from the tree, so that a config added there and forgotten in pyproject.toml fails.
CONFIGS = sorted(p.relative_to(ROOT) for p in (ROOT / "configs").rglob("*") if p.is_file())
SHARED = [
    *("share/distlb/" + (f"systemd/{path.name}" if path.parent.name == "systemd" else str(path))
      for path in CONFIGS),
    "share/distlb/requirements/constraints.txt",
]  # fmt: skip
spec = importlib.util.spec_from_file_location("lock", ROOT / "scripts" / "lock.py")
assert spec is not None and spec.loader is not None
lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lock)  # (scripts/ is no package: it runs before any install)
PACKAGE_DATA = [
    "balancer/observe/dashboard.html", "server/dashboard.html",
    "daemon/charts.js", "daemon/dashboard.css", "wire/compiler_options.txt",
]  # fmt: skip


def _run(command: list[str], cwd: Path, timeout_s: float = 600) -> str:
    result = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    assert result.returncode == 0, f"{command}: {result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """dist/ with the sdist and the wheel, built from a copy of the checkout (the build
    writes egg-info and build/ where it runs)."""
    work = tmp_path_factory.mktemp("build")
    source = work / "src"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES, symlinks=True)
    _run([sys.executable, "-m", "build", "--outdir", str(work / "dist"), str(source)], work)
    yield work / "dist"


@pytest.fixture(scope="module")
def installed(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean venv with the wheel installed as docs/operations.md says (the farm
    lock's versions as constraints), and nothing else of ours."""
    venv = tmp_path_factory.mktemp("venv") / "v"
    _run([sys.executable, "-m", "venv", str(venv)], venv.parent)
    (wheel,) = built.glob("*.whl")
    constraints = ROOT / "requirements" / "constraints.txt"
    _run([str(venv / "bin" / "pip"), "install", "-q", "-c", str(constraints), str(wheel)],
         venv.parent)  # fmt: skip
    return venv


def test_build_makes_an_sdist_and_a_wheel_of_the_projects_version(built: Path) -> None:
    assert sorted(p.name for p in built.iterdir()) == [
        f"distlb-{VERSION}-py3-none-any.whl",
        f"distlb-{VERSION}.tar.gz",
    ]


def test_the_wheel_holds_the_package_data_and_the_shared_files(built: Path) -> None:
    (wheel,) = built.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert set(PACKAGE_DATA) <= names
    data = f"distlb-{VERSION}.data/data/"
    assert {data + path for path in SHARED} <= names
    assert not any(name.startswith("tests/") for name in names)


def test_the_sdist_holds_what_the_wheel_is_built_from(built: Path) -> None:
    (sdist,) = built.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"pyproject.toml", "README.md", *PACKAGE_DATA} <= names
    assert {"configs/systemd/distlb-server.service", "configs/server.toml"} <= names


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_console_script_of_the_wheel_works(installed: Path, script: str) -> None:
    binary = installed / "bin" / script
    assert binary.is_file(), f"the wheel installs no {script}"
    # (run from the venv's directory: nothing of the checkout is importable there)
    assert _run([str(binary), "--help"], installed).startswith(f"usage: {script}")
    assert _run([str(binary), "--version"], installed).strip() == f"{script} {VERSION}"


def test_the_installed_package_data_is_found_where_the_code_looks(installed: Path) -> None:
    code = (
        "import balancer, wire.args, importlib.resources as r; "
        "print(balancer.__file__); "
        "print(r.files('balancer.observe').joinpath('dashboard.html').read_text()[:15]); "
        "print(wire.args.scan(['-c', '-O2', 'x.c']) is not None); "
        "import daemon.pages as p; print(p.page('server', 'dashboard.html')[:15]); "
        "print(all(r.files('daemon').joinpath(n).is_file() for n in p.ASSETS))"
    )
    lines = _run([str(installed / "bin" / "python"), "-c", code], installed).splitlines()
    assert lines[0].startswith(str(installed))
    assert lines[1].lower().startswith("<!doctype html")
    assert lines[2] == "True"  # (the judge's option table, read from the package)
    assert lines[3].lower().startswith("<!doctype html")  # (the server's dashboard)
    assert lines[4] == "True"  # (the pages' script and style sheet)


@pytest.mark.parametrize(
    ("script", "example"),
    [("distlb-server", "server.toml"), ("distlb-balancer", "balancer.toml")],
)
def test_the_installed_example_configs_pass_the_check(
    installed: Path, script: str, example: str
) -> None:
    for path in SHARED:
        assert (installed / path).is_file(), path
    config = installed / "share" / "distlb" / "configs" / example
    out = _run([str(installed / "bin" / script), "--check-config", str(config)], installed)
    assert "the config is valid" in out


def test_installing_with_the_constraints_gives_the_farm_locks_versions(installed: Path) -> None:
    result = subprocess.run(
        [str(installed / "bin" / "python"), "-c",
         "import json; from importlib import metadata; "
         "print(json.dumps({d.metadata['Name']: d.version for d in metadata.distributions()}))"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    versions = {lock.normalize(name): v for name, v in json.loads(result.stdout).items()}
    farm = lock.read_pins(ROOT / "requirements" / "farm.txt")
    assert {name: versions.get(name) for name in farm} == farm
