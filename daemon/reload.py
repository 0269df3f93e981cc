"""SIGHUP: a daemon reads its config again and applies what it can while it runs.

What a reload may change is every setting but those a running daemon cannot take
without a restart (the addresses and ports it listens on, its process layout): a new
config that changes one of those is refused as a whole, naming them, and the daemon
keeps the config it has. The rest is applied at once, between two jobs' steps (the
event loop runs one thing at a time), and the daemon says what changed. Pure, but for
the snapshot file the balancer's workers share.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, fields
from typing import Any, TypeVar

from daemon.config import ConfigError

T = TypeVar("T")

NEVER_COMPARED = frozenset({"check_config"})


class ReloadRefused(ConfigError):
    """The new config changes what needs a restart; the old one stays in force."""


def flag(name: str) -> str:
    """A config field as its flag: ``queue_timeout`` as ``--queue-timeout``."""
    return "--" + name.replace("_", "-")


def changed_settings(old: Any, new: Any) -> list[str]:
    """The fields (by name) whose values differ between two configs of one type."""
    return [
        f.name
        for f in fields(old)
        if f.name not in NEVER_COMPARED and getattr(old, f.name) != getattr(new, f.name)
    ]


def check_reloadable(old: Any, new: Any, needs_restart: frozenset[str]) -> list[str]:
    """What changed from ``old`` to ``new``; raises :class:`ReloadRefused` naming the
    settings among them that only a restart applies."""
    changed = changed_settings(old, new)
    refused = [name for name in changed if name in needs_restart]
    if refused:
        raise ReloadRefused(
            f"{', '.join(flag(name) for name in refused)} changed: only a restart applies "
            f"{'it' if len(refused) == 1 else 'them'} (the config in force is kept)"
        )
    return changed


def write_snapshot(path: str, config: Any, generation: int, error: str | None) -> None:
    """Write what workers reload from, atomically: the config in force (the last good
    one) and, when the latest reload was refused, why."""
    state = {"generation": generation, "config": asdict(config), "error": error}
    directory = os.path.dirname(path)
    fd, partial = tempfile.mkstemp(dir=directory, prefix=".config-")
    with os.fdopen(fd, "w") as out:
        json.dump(state, out)
    os.replace(partial, path)


def read_snapshot(path: str, config_type: type[T]) -> tuple[T, str | None]:
    """The config in force from a snapshot, and the error of the latest reload (None:
    it was applied). Raises :class:`ConfigError` when there is none to read."""
    try:
        with open(path) as snapshot:
            state = json.load(snapshot)
        return config_type(**state["config"]), state["error"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"the workers' config snapshot {path}: {exc}") from exc
