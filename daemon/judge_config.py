"""The judge's settings, as both daemons take them (their configs extend JudgeConfig)."""

from __future__ import annotations

import argparse
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field

from client.cli import ConfigError
from daemon.judge import (
    DEFAULT_TRUSTED_SPECS_DIRS,
    Judge,
    SpecsCheck,
    on_disk_specs_check,
    path_only_specs_check,
)


def add_judge_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-option",
        action="append",
        metavar="OPTION",
        help="also accept this compiler option (repeatable): the exact argument, or a "
        "prefix ending in * whose value is not checked. A risk: an option the judge "
        "does not know may run programs or read files (docs/policy.md)",
    )
    parser.add_argument(
        "--trusted-specs-dir",
        action="append",
        metavar="DIR",
        help="-specs=FILE is accepted for root-owned files under these directories "
        f"(repeatable; default {' '.join(DEFAULT_TRUSTED_SPECS_DIRS)})",
    )


@dataclass
class JudgeConfig:
    allow_option: list[str] = field(default_factory=list)
    trusted_specs_dir: list[str] = field(default_factory=lambda: list(DEFAULT_TRUSTED_SPECS_DIRS))

    def judge(self, compilers: Mapping[str, str] | None, *, on_disk: bool) -> Judge:
        """The judge these settings describe. ``on_disk``: check specs files on this
        machine (a server's), not only their paths (a balancer's). Raises ConfigError for
        a trusted directory that others could write to."""
        for option in self.allow_option:
            if not option.startswith("-") or option in ("-", "-*"):
                raise ConfigError(f"--allow-option {option!r}: name one option, starting with -")
        for directory in self.trusted_specs_dir:
            if not os.path.isabs(directory):
                raise ConfigError(f"--trusted-specs-dir {directory!r} must be an absolute path")
            try:
                info = os.lstat(directory)
            except FileNotFoundError:
                continue  # nothing under it can be used; Debian has no /usr/lib/rpm
            except OSError as exc:
                raise ConfigError(f"--trusted-specs-dir {directory}: {exc}") from exc
            if on_disk and (
                not stat.S_ISDIR(info.st_mode)
                or info.st_uid != 0
                or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
            ):
                raise ConfigError(
                    f"--trusted-specs-dir {directory} must be a directory owned by root and "
                    "writable by nobody else (a specs file can run programs)"
                )
        check: SpecsCheck = (on_disk_specs_check if on_disk else path_only_specs_check)(
            self.trusted_specs_dir
        )
        return Judge(compilers=compilers, allow_options=self.allow_option, specs_check=check)
