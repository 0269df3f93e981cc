"""One source for every setting: a default is written once, on the config dataclass.
The flags' help shows it from there, the settings objects the daemons build from a
config take it field by field, and the README's tables say the same."""

from __future__ import annotations

import re
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

from balancer.cli import build_parser as balancer_parser
from balancer.config import BalancerConfig
from balancer.settings import DispatchSettings, PoolSettings
from daemon.config import config_defaults, setting_source, shown_default
from server.config import ServerConfig
from server.config import build_parser as server_parser

README = Path(__file__).resolve().parents[2] / "README.md"
DAEMONS = {
    "distlb-balancer": (BalancerConfig, balancer_parser, "## Using distlb-balancer"),
    "distlb-server": (ServerConfig, server_parser, "## Using distlb-server"),
}
UNFLAGGED = {
    "distlb-balancer": set(),
    # The server's compilers are its --compiler list; the judge's extra names are the
    # balancer's (a server takes them from TOML only, shared with the balancer's file).
    "distlb-server": {"allow_compiler"},
}


@pytest.mark.parametrize("settings_type", [PoolSettings, DispatchSettings])
def test_settings_objects_default_to_the_configs_defaults(settings_type: type) -> None:
    config = config_defaults(BalancerConfig)
    for f in fields(settings_type):
        assert f.default is not MISSING, f.name
        assert f.default == config[setting_source(BalancerConfig, f.name)], f.name


@pytest.mark.parametrize("daemon", DAEMONS)
def test_every_field_has_a_flag_and_every_flag_a_field(daemon: str) -> None:
    config_type, build, _ = DAEMONS[daemon]
    flags = {a.dest for a in build()._actions if a.option_strings} - {"help", "config", "version"}
    assert flags == set(config_defaults(config_type)) - UNFLAGGED[daemon]


@pytest.mark.parametrize("daemon", DAEMONS)
def test_help_shows_each_default_that_is_written_down(daemon: str) -> None:
    config_type, build, _ = DAEMONS[daemon]
    defaults = config_defaults(config_type)
    factories = {f.name for f in fields(config_type) if f.default_factory is not MISSING}
    for action in build()._actions:
        if not action.option_strings or action.dest not in defaults or not action.help:
            continue
        assert "{default}" not in action.help, action.dest
        value = defaults[action.dest]
        if isinstance(value, int | float) and not isinstance(value, bool):
            if action.dest in factories:
                continue  # (said in words: "CPU count")
            assert shown_default(value) in action.help, (action.dest, action.help)


def _readme_rows(section: str) -> list[tuple[list[str], list[str]]]:
    """(flags, defaults) of each row of the flag table under ``section``."""
    text = README.read_text()
    body = text[text.index(section) :]
    table = body[body.index("| flag (TOML key) | default | meaning |") :].split("\n\n", 1)[0]
    rows = []
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        flags = re.findall(r"`--([a-z0-9-]+)", cells[0])
        defaults = [d.strip().strip("`") for d in cells[1].split(",")] if cells[1] else []
        rows.append((flags, defaults))
    return rows


def _number(text: str) -> float | None:
    try:
        return float(text.removesuffix(" MB"))
    except ValueError:
        return None


@pytest.mark.parametrize("daemon", DAEMONS)
def test_the_readme_table_lists_every_flag_with_its_default(daemon: str) -> None:
    config_type, build, section = DAEMONS[daemon]
    defaults = config_defaults(config_type)
    rows = _readme_rows(section)
    listed = {flag.replace("-", "_") for flags, _ in rows for flag in flags}
    documented_elsewhere = {"allow_compiler"}  # (docs/policy.md, with --allow-option)
    flags = {a.dest for a in build()._actions if a.option_strings} - {"help"}
    assert flags - listed - documented_elsewhere == set()
    checked = 0
    for names, values in rows:
        if len(names) != len(values):
            continue  # (a row whose defaults are words, or one for several flags)
        for name, shown in zip(names, values, strict=True):
            field = name.replace("-", "_")
            number = _number(shown)
            value = defaults.get(field)
            if number is not None and isinstance(value, int | float):
                assert number == value, (name, shown, value)
                checked += 1
            elif isinstance(value, str) and re.fullmatch(r"[\w./-]+", shown):
                assert shown == value, (name, shown, value)
                checked += 1
    assert checked >= 20
