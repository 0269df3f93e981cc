"""A daemon's configuration: defaults < ``--config FILE`` (TOML) < flags."""

from __future__ import annotations

import argparse
import tomllib
from dataclasses import MISSING, fields
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from client.cli import add_version_flag

T = TypeVar("T")


class ConfigError(Exception):
    """The configuration cannot work; the message says which setting and why."""


LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("auto", "json", "console")


def check_common(config: Any, ports: dict[str, int | None]) -> None:
    """What both daemons check alike: the listen address, the ports (each in range,
    no two the same but 0, which picks a free one), the log format and level.
    Raises :class:`ConfigError`."""
    import ipaddress
    import socket

    try:
        ipaddress.ip_address(config.listen)
    except ValueError:
        try:
            socket.getaddrinfo(config.listen, None, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ConfigError(f"--listen {config.listen!r}: not an address ({exc})") from None
    for flag, port in ports.items():
        if port is not None and not 0 <= port <= 65535:
            raise ConfigError(f"{flag} {port}: a port is 0 to 65535 (0 picks a free one)")
    taken: dict[int, str] = {}
    for flag, port in ports.items():
        if port:
            if port in taken:
                raise ConfigError(f"{flag} {port} is also {taken[port]}: give each its own")
            taken[port] = flag
    if config.log_format not in LOG_FORMATS:
        raise ConfigError(f"--log-format must be one of {', '.join(LOG_FORMATS)}")
    if config.log_level not in LOG_LEVELS:
        raise ConfigError(f"--log-level must be one of {', '.join(LOG_LEVELS)}")


def load_config(config_type: type[T], parser: argparse.ArgumentParser, argv: list[str] | None) -> T:
    """Build ``config_type`` (a dataclass) from its defaults, then ``--config FILE``
    (TOML, keys spelled like the flags: ``job-lifetime`` or ``job_lifetime``), then flags.

    ``parser`` must use ``argument_default=argparse.SUPPRESS`` so that only flags
    actually given override the file. Raises :class:`ConfigError`.
    """
    flags = vars(parser.parse_args(argv))
    values: dict[str, Any] = {}
    config_file = flags.pop("config", None)
    check_file = flags.get("check_config")
    if check_file:
        if config_file:
            raise ConfigError("--check-config FILE reads FILE as the config: give no --config")
        config_file = check_file
    if config_file:
        known = {f.name for f in fields(config_type)} - {"check_config"}  # type: ignore[arg-type]
        values.update(read_toml(config_file, known))
    values.update(flags)
    hints = get_type_hints(config_type)
    for name, value in values.items():
        if not _fits(value, hints.get(name, object)):
            raise ConfigError(f"{name.replace('_', '-')}: {value!r} is not a {hints[name]}")
    try:
        return config_type(**values)
    except TypeError as exc:
        raise ConfigError(str(exc)) from exc


def _fits(value: object, hint: object) -> bool:
    """Whether a TOML value suits a config field typed ``int``, ``float``, ``str``,
    ``bool``, ``list[str]`` or any of those ``| None``."""
    origin = get_origin(hint)
    if origin in (Union, UnionType):
        return any(_fits(value, arg) for arg in get_args(hint))
    if hint is type(None):
        return value is None
    if origin is list:
        (item,) = get_args(hint) or (object,)
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def read_toml(path: str, known: set[str]) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"--config {path}: {exc}") from exc
    values = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError(f"{path}: unknown key {key!r}")
        values[name] = value
    return values


def add_operator_flags(parser: argparse.ArgumentParser) -> None:
    """``--check-config FILE`` (its config dataclass needs a ``check_config`` field:
    :func:`daemon.lifecycle.service_main` reads it) and ``--version``."""
    parser.add_argument(
        "--check-config",
        metavar="FILE",
        help="read FILE as --config does (with any other flags), check every setting as "
        "the daemon does at start, say so and exit: 0 if they can work, 2 and why not "
        "(binds and starts nothing; compilers and the sandbox are checked at start)",
    )
    add_version_flag(parser)


def add_cache_share_flag(parser: argparse.ArgumentParser) -> None:
    """``--cache-share-across-dirs`` (both daemons: the field ``cache_share_across_dirs``)."""
    parser.add_argument(
        "--cache-share-across-dirs",
        action="store_const",
        const=True,
        help="share results of debug builds (-g) across checkout directories even without "
        "prefix maps: the objects then record the directory of whoever built them first "
        "(docs/cache.md); by default such builds share only within one directory",
    )


DEFAULT = "{default}"
"""Written in a flag's help where its default goes: :func:`fill_defaults` puts the
config field's default there, so a default is written once, on the dataclass."""


def shown_default(value: object) -> str:
    """A default as help texts and the README show it (``30.0`` as ``30``)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value) or "none"
    return "none" if value is None else str(value)


def config_defaults(config_type: type) -> dict[str, object]:
    """Each field of a config dataclass and its default."""
    values: dict[str, object] = {}
    for f in fields(config_type):
        if f.default is not MISSING:
            values[f.name] = f.default
        elif f.default_factory is not MISSING:
            values[f.name] = f.default_factory()
    return values


def fill_defaults(parser: argparse.ArgumentParser, config_type: type) -> None:
    """Complete ``parser`` from ``config_type``: each flag's help gets its field's
    default where it says :data:`DEFAULT`, and a flag given no type gets its field's
    (int or float). Raises :class:`ConfigError` for a flag that names no field.
    (A default that depends on the machine, as the CPU count, is said in words.)"""
    defaults = config_defaults(config_type)
    hints = get_type_hints(config_type)
    for action in parser._actions:  # (argparse has no public list of its actions)
        if not action.option_strings or action.dest in ("help", "config", "version"):
            continue
        if action.dest not in defaults:
            raise ConfigError(f"{action.option_strings[0]} sets no field of {config_type.__name__}")
        hint = hints[action.dest]
        if action.type is None and hint in (int, float) and action.nargs != 0:
            action.type = hint
        if action.help and DEFAULT in action.help:
            action.help = action.help.replace(DEFAULT, shown_default(defaults[action.dest]))


def setting_source(config_type: type, name: str) -> str:
    """The config field a settings object's field ``name`` comes from: the same name,
    or without its unit (``queue_timeout_s`` from ``queue_timeout``)."""
    names = {f.name for f in fields(config_type)}
    if name in names:
        return name
    if name.endswith("_s") and name[:-2] in names:
        return name[:-2]
    raise ConfigError(f"{config_type.__name__} has no setting for {name!r}")


def settings_from(config: Any, settings_type: type[T]) -> T:
    """A settings object (a dataclass) built from ``config`` field by field, by name
    (:func:`setting_source`), never by position."""
    values = {
        f.name: getattr(config, setting_source(type(config), f.name))
        for f in fields(settings_type)  # type: ignore[arg-type]
    }
    return settings_type(**values)
