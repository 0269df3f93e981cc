"""Issue 33: ``--check-config`` never passes a config the daemon cannot run. It runs
the daemon's own start-up checks, all but the listening, so a table of bad configs
gets the same verdict, and the same reason, from ``--check-config FILE`` and from a
real start with ``--config FILE`` (which must fail at once, not run)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.servers import role_command

pytestmark = pytest.mark.integration

START_TIMEOUT_S = 60

# (daemon, TOML beyond the test's own listen/tmp-dir lines, what both must say)
BAD = [
    ("server", "port = 70000\n", "a port is 0 to 65535"),
    ("server", 'log-level = "verbose"\n', "--log-level must be one of"),
    ("server", "port = 4100\nstats-port = 4100\n", "--stats-port 4100 is also --port"),
    ("server", 'listen = "no-such-host.invalid"\n', "not an address"),
    ("server", 'allow = ["10.0.0.0/33"]\n', "--allow"),
    ("server", 'compiler = ["no-such-cc"]\n', "no-such-cc"),
    ("server", 'job-uids = "0-1000"\n', "--job-uids"),
    ("server", 'cache-dir = "{tmp}/cache"\n', "--cache-secret-file"),
    ("server", 'tmp-dir = "{private}"\n', "cannot reach it"),
    ("balancer", "port = 70000\n", "a port is 0 to 65535"),
    ("balancer", 'log-level = "verbose"\n', "--log-level must be one of"),
    ("balancer", "port = 4100\nadmin-port = 4100\n", "--admin-port 4100 is also --port"),
    ("balancer", 'backend = ["10.0.0.1:3632,kind=nope"]\n', "--backend"),
    ("balancer", 'cache-redis = "redis://127.0.0.1:9/0"\n', "--cache-secret-file"),
    ("balancer", 'client-keytab = "{tmp}/no-such.keytab"\n', "--client-keytab"),
    ("balancer", 'auth = true\nkeytab = "{tmp}/no-such.keytab"\n', "keytab"),
]


def _config(daemon: str, text: str, tmp: Path, private: Path) -> str:
    base = 'listen = "127.0.0.1"\n'
    if daemon == "server" and "port" not in text:
        base += "port = 0\nstats-port = 0\n"
    if daemon == "server" and "tmp-dir" not in text:
        base += f'tmp-dir = "{tmp}"\n'
    if daemon == "balancer":
        base += "port = 0\nadmin-port = 0\n" if "port" not in text else ""
        base += 'backend = ["127.0.0.1:9"]\n' if "backend" not in text else ""
    lines = {line.split("=")[0].strip(): line for line in (base + text).splitlines()}
    return "\n".join(lines.values()).format(tmp=tmp, private=private) + "\n"


@pytest.mark.parametrize(("daemon", "text", "reason"), BAD)
def test_check_config_and_a_start_give_the_same_verdict(
    daemon: str, text: str, reason: str, server_tmp: Path
) -> None:
    private = server_tmp.parent / "private"
    private.mkdir(mode=0o700)
    config = server_tmp.parent / f"{daemon}.toml"
    config.write_text(_config(daemon, text, server_tmp, private))

    check = subprocess.run(
        [*role_command(daemon), "--check-config", str(config)],
        capture_output=True, text=True, timeout=START_TIMEOUT_S, check=False,
    )  # fmt: skip
    start = subprocess.Popen(
        [*role_command(daemon), "--config", str(config), "--log-format", "json"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _, start_err = start.communicate(timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        start.kill()
        start.communicate()
        pytest.fail(f"{daemon} started with a config --check-config said: {check.stderr}")

    assert check.returncode == 2, check.stdout + check.stderr
    assert start.returncode == 2, start_err
    assert reason in check.stderr, check.stderr
    assert reason in start_err, start_err
    assert "valid" not in check.stdout
