"""A daemon's configuration: defaults < ``--config FILE`` (TOML) < flags."""

from __future__ import annotations

import argparse
import tomllib
from dataclasses import fields
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

T = TypeVar("T")


class ConfigError(Exception):
    """The configuration cannot work; the message says which setting and why."""


def load_config(config_type: type[T], parser: argparse.ArgumentParser, argv: list[str] | None) -> T:
    """Build ``config_type`` (a dataclass) from its defaults, then ``--config FILE``
    (TOML, keys spelled like the flags: ``job-lifetime`` or ``job_lifetime``), then flags.

    ``parser`` must use ``argument_default=argparse.SUPPRESS`` so that only flags
    actually given override the file. Raises :class:`ConfigError`.
    """
    flags = vars(parser.parse_args(argv))
    values: dict[str, Any] = {}
    config_file = flags.pop("config", None)
    if config_file:
        values.update(read_toml(config_file, {f.name for f in fields(config_type)}))  # type: ignore[arg-type]
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
