"""Which specs files (``-specs=FILE``) the judge trusts: only root's, under a trusted
directory (a specs file can run programs)."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence

from daemon.logged import quoted

DEFAULT_TRUSTED_SPECS_DIRS = ("/usr/lib/rpm/redhat", "/usr/share/dpkg")

# The language a -x names -> the preprocessed language that is really sent.

SpecsCheck = Callable[[str], "str | None"]
"""Returns why a specs file may not be used, or None when it may."""
"""A check of a specs file's path: None when trusted, else why not."""


def path_only_specs_check(trusted_dirs: Sequence[str]) -> SpecsCheck:
    """Accept a specs file named by a clean absolute path under a trusted directory.
    What the balancer can check: the file itself is on the compile server."""
    roots = [os.path.normpath(d) for d in trusted_dirs]

    def check(path: str) -> str | None:
        if not os.path.isabs(path) or os.path.normpath(path) != path:
            return "a specs file must be named by a clean absolute path"
        if not any(path.startswith(root + os.sep) for root in roots):
            return (
                f"specs files are trusted only under {', '.join(roots) or 'no directory'}"
                " (--trusted-specs-dir)"
            )
        return None

    return check


def on_disk_specs_check(trusted_dirs: Sequence[str]) -> SpecsCheck:
    """As :func:`path_only_specs_check`, and the file and every directory from the trusted
    one down are real (no symlinks), owned by root and writable by nobody else: a specs
    file can run programs, so only root's may."""
    by_path = path_only_specs_check(trusted_dirs)
    roots = [os.path.normpath(d) for d in trusted_dirs]

    def check(path: str) -> str | None:
        reason = by_path(path)
        if reason is not None:
            return reason
        root = next(r for r in roots if path.startswith(r + os.sep))
        current = root
        parts = [root, *(os.path.join(root, p) for p in _prefixes(path[len(root) + 1 :]))]
        for current in parts:
            try:
                info = os.lstat(current)
            except OSError:
                return f"{quoted(current)} does not exist on this server"
            if stat.S_ISLNK(info.st_mode):
                return f"{quoted(current)} is a symbolic link"
            if info.st_uid != 0 or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                return f"{quoted(current)} is not owned by root or is writable by others"
        if not stat.S_ISREG(info.st_mode):
            return f"{quoted(current)} is not a regular file"
        return None

    return check


def _prefixes(relative: str) -> list[str]:
    pieces = relative.split(os.sep)
    return [os.sep.join(pieces[: i + 1]) for i in range(len(pieces))]
