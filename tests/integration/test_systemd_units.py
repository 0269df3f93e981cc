"""Issue 19: the systemd units in configs/systemd/ are valid units (``systemd-analyze
verify``, which needs no running systemd), every flag they pass is one the daemon
takes, and their config check passes the example configs we ship for /etc/distlb/."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.servers import role_command

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "configs" / "systemd"
INSTALLED_BIN = "/opt/distlb/bin/"
COMMAND_KEYS = ("ExecStartPre", "ExecStart", "ExecReload")
EXPECTED = {"distlb-server.service", "distlb-server@.service", "distlb-balancer.service"}


def _unit(name: str) -> dict[str, list[str]]:
    """Each key of ``name``'s [Service] section and its values, in order."""
    parser = _UnitParser(strict=False, interpolation=None, dict_type=_MultiDict)
    parser.read_string((UNITS / name).read_text())
    return {key: value.split("\n") for key, value in parser["Service"].items()}


class _UnitParser(configparser.ConfigParser):
    def optionxform(self, optionstr: str) -> str:
        return optionstr  # a unit's keys keep their case


class _MultiDict(dict[str, str]):
    """Keys given twice (ExecReload) keep every value, one a line."""

    def __setitem__(self, key: str, value: str) -> None:
        # While it reads, configparser holds an option's lines in a list, not the str
        # its types say: a key given again adds its lines to the first one's.
        existing: object = self.get(key)
        lines: object = value
        if isinstance(existing, list) and isinstance(lines, list):
            existing.extend(lines)
        else:
            super().__setitem__(key, value)


def _commands(name: str) -> list[list[str]]:
    service = _unit(name)
    return [shlex.split(line) for key in COMMAND_KEYS for line in service.get(key, []) if line]


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail("systemd-analyze is missing: scripts/bootstrap.sh test installs Debian's "
                    "systemd", pytrace=False)  # fmt: skip
    return tool


def _with_local_binaries(tmp_path: Path) -> Path:
    """The units, in ``tmp_path``, starting this checkout's console scripts instead of
    /opt/distlb's (verify checks that each command exists); the template also under an
    instance's name."""
    bin_dir = Path(role_command("server")[0]).parent
    for unit in UNITS.glob("*.service"):
        text = unit.read_text().replace(INSTALLED_BIN, f"{bin_dir}/")
        (tmp_path / unit.name).write_text(text)
    (tmp_path / "distlb-server@one.service").symlink_to("distlb-server@.service")
    return tmp_path


def test_the_units_are_all_there() -> None:
    assert {unit.name for unit in UNITS.glob("*.service")} == EXPECTED


def test_systemd_analyze_verify_finds_nothing_to_say(tmp_path: Path) -> None:
    if not Path(role_command("server")[0]).is_file():
        pytest.fail("the console scripts are missing: run scripts/bootstrap.sh", pytrace=False)
    units = _with_local_binaries(tmp_path)
    names = sorted(p.name for p in units.iterdir() if p.name != "distlb-server@.service")
    result = subprocess.run(
        [_systemd_analyze(), "verify", "--man=no", *(str(units / n) for n in names)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    # verify exits 0 on unknown keys and bad values too ("ignoring"): any word is a fault.
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and result.stdout == ""


def test_verify_speaks_up_on_a_broken_unit(tmp_path: Path) -> None:
    """(The test above can fail: verify names a misspelt key and a bad value.)"""
    units = _with_local_binaries(tmp_path)
    broken = units / "distlb-balancer.service"
    text = broken.read_text()
    broken.write_text(
        text.replace("RestrictNamespaces=yes", "RestrictNamespace=yes\nProtectSystem=bogus")
    )
    result = subprocess.run(
        [_systemd_analyze(), "verify", "--man=no", str(broken)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert "RestrictNamespace" in result.stderr and "bogus" in result.stderr


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_flag_a_unit_passes_is_in_the_daemons_help(name: str) -> None:
    checked = 0
    for command in _commands(name):
        if not command[0].startswith(INSTALLED_BIN):
            continue
        script = command[0].removeprefix(INSTALLED_BIN)
        help_text = subprocess.run(
            [*role_command(script.removeprefix("distlb-")), "--help"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
        offered = set(re.findall(r"--[a-z][a-z0-9-]*", help_text))
        for flag in (arg.split("=", 1)[0] for arg in command[1:] if arg.startswith("--")):
            assert flag in offered, f"{name}: {script} has no {flag}"
            checked += 1
    assert checked >= 3


@pytest.mark.parametrize(
    ("name", "example"),
    [("distlb-server.service", "server.toml"), ("distlb-balancer.service", "balancer.toml"),
     ("distlb-server@.service", "farm/server-1.toml")],
)  # fmt: skip
def test_the_units_config_check_passes_the_example_config(name: str, example: str) -> None:
    """ExecStartPre= (and the balancer's first ExecReload=) check /etc/distlb's file:
    run as written, on the example an operator starts from."""
    checks = [c for c in _commands(name) if "--check-config" in c]
    assert checks, f"{name} checks no config before starting"
    for command in checks:
        script = command[0].removeprefix(INSTALLED_BIN)
        at = command.index("--check-config")
        assert command[at + 1].startswith("/etc/distlb/")
        args = [*command[1:at], "--check-config", str(ROOT / "configs" / example)]
        result = subprocess.run(
            [*role_command(script.removeprefix("distlb-")), *args],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr


def test_units_notify_restart_and_reload_as_each_daemon_can() -> None:
    server = _unit("distlb-server.service")
    template = _unit("distlb-server@.service")
    balancer = _unit("distlb-balancer.service")
    for service in (server, template, balancer):
        assert service["Type"] == ["notify"]
        assert service["Restart"] == ["on-failure"]
        assert service["KillMode"] == ["mixed"]  # (the daemons drain, then end their jobs)
    # Both reload on SIGHUP, after the config passes the check.
    for service in (server, template, balancer):
        assert service["ExecReload"][-1] == "/bin/kill -HUP $MAINPID"
        assert "--check-config" in service["ExecReload"][0]
    assert server["WatchdogSec"] == ["30s"]
    # The sandbox needs user namespaces; the balancer needs none and no capability.
    assert "user" in server["RestrictNamespaces"][0].split()
    assert balancer["RestrictNamespaces"] == ["yes"]
    assert balancer["DynamicUser"] == ["yes"] and balancer["CapabilityBoundingSet"] == [""]
    assert "%i" in template["ExecStart"][0]


def test_the_template_is_the_server_unit_per_instance() -> None:
    """distlb-server@.service differs from distlb-server.service only by the instance
    (its config file, cache directory and description), so neither drifts."""
    single, template = _unit("distlb-server.service"), _unit("distlb-server@.service")
    per_instance = {
        key: [v.replace("server-%i.toml", "server.toml").replace("distlb/%i", "distlb")
              for v in values]
        for key, values in template.items()
    }  # fmt: skip
    assert per_instance == single
