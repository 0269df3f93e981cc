"""A real distcc pump client (``pump``, its include server, ``distcc``) for the tests.

Debian 12's distcc-pump does not work on Python 3.11, so ``scripts/bootstrap.sh test``
builds one from Debian's distcc source (scripts/build-pump-client.sh) into a prefix of
its own and names that prefix in ``pump-current``. Runs follow tests/support/distcc.py:
their own DISTCC_DIR, always under ``timeout``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.support.distcc import CLIENT_TIMEOUT_S, distcc_env

ROOT = Path(__file__).resolve().parents[2]
RECIPE = (ROOT / "scripts" / "build-pump-client.sh", ROOT / "scripts" / "pump_ssize_fix.py")
MARKER = ".distlb-built"
REBUILD = "run scripts/bootstrap.sh test (as root) to build it"


def _cache() -> Path:
    return Path(os.environ.get("DISTLB_TEST_CACHE", "/var/cache/distlb-test"))


def pump_prefix() -> Path:
    """The prefix the build script made from the current recipe, holding ``bin/pump``
    and ``bin/distcc``. Raises RuntimeError, saying what to run, when there is none or
    it was built from another version of the recipe."""
    current = _cache() / "pump-current"
    try:
        prefix = Path(current.read_text().strip())
        marker = (prefix / MARKER).read_text()
    except OSError as error:
        raise RuntimeError(f"no distcc pump client built ({error}): {REBUILD}") from error
    built = {key: value for key, _, value in (line.partition("=") for line in marker.splitlines())}
    # The build script's stamp: the recipe's digest and the source package's version.
    recipe = hashlib.sha256(b"".join(path.read_bytes() for path in RECIPE)).hexdigest()
    version = built.get("source", "").removeprefix("distcc ")
    stamp = hashlib.sha256(f"{recipe}\n{version}\n".encode()).hexdigest()[:12]
    if built.get("recipe") != recipe or prefix.name != f"pump-{stamp}":
        raise RuntimeError(f"the pump client in {prefix} is from another recipe: {REBUILD}")
    return prefix


def pump_env(
    hosts: str, *, fallback: bool = False, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of a ``pump`` run: distcc_env's (its own DISTCC_DIR, no backoff
    override), with the built prefix's bin first on PATH so ``distcc`` is its client."""
    env = distcc_env(hosts, fallback=fallback, extra=extra)
    env["PATH"] = f"{pump_prefix() / 'bin'}:{env['PATH']}"
    # Whatever an outer pump left: this run starts (and stops) an include server of its own.
    for name in ("INCLUDE_SERVER_PORT", "INCLUDE_SERVER_PID", "INCLUDE_SERVER_DIR"):
        env.pop(name, None)
    return env


def run_pump_make(
    project: Path,
    hosts: str,
    *,
    make_args: tuple[str, ...] = (),
    compiler: str = "gcc",
    fallback: bool = False,
    extra_env: dict[str, str] | None = None,
    timeout_s: int = CLIENT_TIMEOUT_S,
) -> subprocess.CompletedProcess[str]:
    """``pump make CC="distcc COMPILER"`` in ``project``: pump starts the include server,
    runs make with the prefix's bin first on PATH, then stops the include server."""
    env = pump_env(hosts, fallback=fallback, extra=extra_env)
    return subprocess.run(
        ["timeout", str(timeout_s), str(pump_prefix() / "bin" / "pump"), "make",
         f"CC=distcc {compiler}", *make_args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip


def protocol_versions_sent(client_log: str) -> set[int]:
    """The distcc protocol versions a client's DISTCC_VERBOSE=1 log shows it sending
    (``send DIST00000003`` is pump mode)."""
    return {int(hex_value, 16) for hex_value in re.findall(r"send DIST([0-9a-f]{8})", client_log)}


@contextlib.contextmanager
def include_server(hosts: str) -> Iterator[dict[str, str]]:
    """One include server for many ``distcc`` runs (``pump --startup``, stopped with
    ``pump --shutdown`` by its own pid): the environment a pump-mode ``distcc`` run
    needs, with ``hosts`` as DISTCC_HOSTS (which must say ``,cpp``)."""
    env = pump_env(hosts)
    pump = str(pump_prefix() / "bin" / "pump")
    started = subprocess.run(
        ["timeout", "60", pump, "--startup"], env=env, capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    found = dict(re.findall(r"^export (INCLUDE_SERVER_\w+)='([^']*)'$", started.stdout, re.M))
    if len(found) != 3:
        raise RuntimeError(f"pump --startup failed: {started.stdout}{started.stderr}")
    env.update(found)
    try:
        yield env
    finally:
        subprocess.run(["timeout", "60", pump, "--shutdown"], env=env, capture_output=True,
                       check=False)  # fmt: skip
