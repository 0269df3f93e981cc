"""The judge's settings, as both daemons take them (their configs extend JudgeConfig)."""

from __future__ import annotations

import argparse
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field

from daemon.config import ConfigError
from daemon.judge import FORBIDDEN_COMPILER_NAMES, Judge
from daemon.specs import (
    DEFAULT_TRUSTED_SPECS_DIRS,
    SpecsCheck,
    on_disk_specs_check,
    path_only_specs_check,
)
from wire.args import default_table


def add_judge_flags(parser: argparse.ArgumentParser, *, compiler_names: bool = False) -> None:
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
    if compiler_names:
        parser.add_argument(
            "--allow-compiler",
            action="append",
            metavar="NAME",
            help="also pass on jobs for this compiler name (repeatable): by default only "
            "compiler-shaped names (gcc, g++, cc, c++, clang, clang++, with a target or a "
            "version) reach the backends, which judge the name again",
        )


def _check_ancestors(directory: str) -> None:
    """Every directory above a trusted one must be root's, and writable by others only
    with the sticky bit (as /tmp): else someone could put another tree in its place."""
    current = os.path.dirname(os.path.normpath(directory))
    while True:
        info = os.lstat(current)
        shared = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if (
            stat.S_ISLNK(info.st_mode)
            or info.st_uid != 0
            or (shared and not info.st_mode & stat.S_ISVTX)
        ):
            raise ConfigError(
                f"--trusted-specs-dir {directory}: {current} above it must be a directory "
                "owned by root that others cannot write to (or sticky, as /tmp)"
            )
        parent = os.path.dirname(current)
        if parent == current:
            return
        current = parent


@dataclass
class JudgeConfig:
    allow_option: list[str] = field(default_factory=list)
    trusted_specs_dir: list[str] = field(default_factory=lambda: list(DEFAULT_TRUSTED_SPECS_DIRS))
    allow_compiler: list[str] = field(default_factory=list)
    """(balancer) compiler names passed on besides the compiler-shaped ones."""

    def judge(self, compilers: Mapping[str, str] | None, *, on_disk: bool) -> Judge:
        """The judge these settings describe. ``on_disk``: check specs files on this
        machine (a server's), not only their paths (a balancer's). Raises ConfigError for
        a trusted directory that others could write to."""
        table = default_table()
        for option in self.allow_option:
            if not option.startswith("-") or option in ("-", "-*"):
                raise ConfigError(f"--allow-option {option!r}: name one option, starting with -")
            exact = not option.endswith("*")
            found = table.lookup("driver", option if exact else option[:-1] + "x")
            nested = found is not None and found[0].kind in ("as", "cc1", "llvm", "cpp")
            takes_next = found is not None and exact and found[1] is None and found[0].may_take_next
            if nested or takes_next:
                raise ConfigError(
                    f"--allow-option {option!r}: it takes the next argument as its value, or "
                    "carries options for another program, which would then pass unjudged"
                )
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
            if on_disk:
                _check_ancestors(directory)
        check: SpecsCheck = (on_disk_specs_check if on_disk else path_only_specs_check)(
            self.trusted_specs_dir
        )
        for name in self.allow_compiler:
            if not name or "/" in name or name in FORBIDDEN_COMPILER_NAMES:
                raise ConfigError(
                    f"--allow-compiler {name!r}: a compiler is a bare name, not a shell"
                )
        return Judge(
            compilers=compilers,
            allow_options=self.allow_option,
            specs_check=check,
            compiler_names=self.allow_compiler,
        )
