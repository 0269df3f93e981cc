"""The directory a server keeps its jobs' directories in (``distlb-jobs-*`` under
``--tmp-dir``), and what a server that was killed left there.

Each server makes one at start, writes who owns it (``owner``: its pid and the pid's
start time, which tell a live owner from a reused pid), and removes it when it stops.
A server SIGKILLed (or a machine that lost power with a persistent ``--tmp-dir``)
leaves its directory behind; the next server to start in that ``--tmp-dir`` removes
every one whose owner is gone. Several servers may share a ``--tmp-dir``: a directory
whose owner still runs, or that says no owner (not ours to judge), is left alone.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

PREFIX = "distlb-jobs-"
OWNER = "owner"


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot), None if none runs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # (the command name, in parentheses, may hold spaces: the fields follow its end)
    return stat[stat.rindex(")") + 2 :].split()[19]


def make_jobs_root(tmp_dir: str) -> str:
    """A new jobs directory in ``tmp_dir``, which job uids may pass through but not
    list (0711), marked as this process's."""
    root = tempfile.mkdtemp(prefix=PREFIX, dir=tmp_dir)
    os.chmod(root, 0o711)  # noqa: S103 (passable by job uids, not listable)
    pid = os.getpid()
    owner = Path(root) / OWNER
    owner.write_text(f"{pid} {_start_time(pid)}\n")
    owner.chmod(0o600)
    return root


def owner_gone(root: Path) -> bool:
    """Whether the server that made ``root`` has ended (False when it runs, or when
    ``root`` says no owner)."""
    try:
        pid_text, started = (root / OWNER).read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        return False
    return _start_time(pid) != started


def sweep_stale(tmp_dir: str, remove: Callable[[str], object]) -> list[str]:
    """Remove, with ``remove``, every jobs directory in ``tmp_dir`` whose owner is gone;
    returns their paths."""
    swept = []
    for root in sorted(Path(tmp_dir).glob(f"{PREFIX}*")):
        if root.is_dir() and not root.is_symlink() and owner_gone(root):
            remove(str(root))
            swept.append(str(root))
    return swept
