"""Run the real distcc client safely: its own DISTCC_DIR, always under `timeout`."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CLIENT_TIMEOUT_S = 120


@functools.cache
def _distcc_dirs() -> Path:
    """Where this test process's client state directories live; removed when it ends."""
    path = Path(tempfile.mkdtemp(prefix="distlb-distcc-dirs-"))
    atexit.register(shutil.rmtree, path, True)
    return path


def distcc_env(
    hosts: str, *, fallback: bool, extra: dict[str, str] | None = None
) -> dict[str, str]:
    env = dict(os.environ)
    env["DISTCC_DIR"] = tempfile.mkdtemp(prefix="distcc-dir-", dir=_distcc_dirs())
    env["DISTCC_HOSTS"] = hosts
    env["DISTCC_FALLBACK"] = "1" if fallback else "0"
    # Never together with DISTCC_FALLBACK=0: see DEVELOPERS.md.
    env.pop("DISTCC_BACKOFF_PERIOD", None)
    env.pop("DISTCC_SKIP_LOCAL_RETRY", None)
    env.update(extra or {})
    return env


def run_distcc(
    args: list[str],
    *,
    hosts: str,
    cwd: Path,
    fallback: bool = False,
    extra_env: dict[str, str] | None = None,
    timeout_s: int = CLIENT_TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    env = distcc_env(hosts, fallback=fallback, extra=extra_env)
    return subprocess.run(
        ["timeout", str(timeout_s), "distcc", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def run_make(
    project: Path,
    *,
    hosts: str,
    jobs: int,
    compiler: str = "gcc",
    fallback: bool = False,
    cflags: str | None = None,
) -> subprocess.CompletedProcess[str]:
    env = distcc_env(hosts, fallback=fallback)
    extra = [f"CFLAGS={cflags}"] if cflags is not None else []
    return subprocess.run(
        ["timeout", str(CLIENT_TIMEOUT_S), "make", f"-j{jobs}", f"CC=distcc {compiler}",
         f"CXX=distcc {compiler}", *extra],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip


def start_distcc(
    args: list[str],
    *,
    hosts: str,
    cwd: Path,
    path_prepend: Path | None = None,
    fallback: bool = False,
) -> subprocess.Popen[str]:
    """The real client in the background (its own session, so a test can kill it whole)."""
    env = distcc_env(hosts, fallback=fallback)
    if path_prepend is not None:
        env["PATH"] = f"{path_prepend}:{env['PATH']}"
    return subprocess.Popen(
        ["timeout", str(CLIENT_TIMEOUT_S), "distcc", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
