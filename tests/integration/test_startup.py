"""Startup refuses configurations that could only fail later, with a clear message."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support.secrets import write_secret
from tests.support.servers import role_command, server_command

pytestmark = pytest.mark.integration


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*server_command(), "--port", "0", "--stats-port", "0", "--log-format", "json", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.skipif(os.geteuid() != 0, reason="compilers change user only when started as root")
def test_tmp_dir_the_compile_user_cannot_reach_is_refused() -> None:
    with tempfile.TemporaryDirectory() as private:  # mode 0700, owned by root
        result = _run("--tmp-dir", private)
    assert result.returncode == 2
    assert "cannot reach it" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--compiler", "sh"], "not a shell"),
        (["--compiler", "/usr/bin/gcc"], "not a shell"),
        (["--compiler", "no-such-compiler-here"], "is not on PATH"),
        (["--allow", "10.0.0.300/8"], "--allow"),
        (["--jobs", "0"], "--jobs"),
    ],
)
def test_bad_settings_stop_the_server_with_a_reason(args: list[str], message: str) -> None:
    result = _run(*args)
    assert result.returncode == 2
    assert message in result.stderr


CACHE_ON: dict[str, dict[str, object]] = {
    "server": {"cache-dir": "{tmp}/cache"},
    "balancer": {"backend": ["127.0.0.1:9"], "cache-redis": "redis://127.0.0.1:9/0"},
}
SECRETS: dict[str, tuple[bytes | None, str]] = {
    "none": (None, "needs --cache-secret-file FILE"),
    "missing": (b"", "cannot read it: No such file"),
    "empty": (b"", "the file is empty"),
    "short": (b"0123456789abcdef\n", "16 bytes, at least 32 are needed"),
    "world-readable": (b"x" * 64, "not a secret: others may read or change it (mode 0644"),
}


def _toml(settings: dict[str, object]) -> str:
    return "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items())


@pytest.mark.parametrize("daemon", sorted(CACHE_ON))
@pytest.mark.parametrize("case", sorted(SECRETS))
def test_a_cache_without_a_good_secret_stops_the_daemon_and_check_config_says_why(
    tmp_path: Path, daemon: str, case: str
) -> None:
    """The balancer's Redis and the server's cache directory are written by whoever can
    reach them: neither starts without the secret that authenticates their entries, and
    --check-config refuses the same config with the same reason."""
    content, message = SECRETS[case]
    settings = {key: value.replace("{tmp}", str(tmp_path)) if isinstance(value, str) else value
                for key, value in CACHE_ON[daemon].items()}  # fmt: skip
    if content is not None:
        secret = tmp_path / "cache-secret"
        if case != "missing":
            write_secret(secret, content, 0o644 if case == "world-readable" else 0o600)
        settings["cache-secret-file"] = str(secret)
    config = tmp_path / f"{daemon}.toml"
    config.write_text(_toml(settings))
    common = ["--port", "0", "--log-format", "json"]
    common += ["--stats-port", "0"] if daemon == "server" else ["--admin-port", "0"]
    started = subprocess.run([*role_command(daemon), *common, "--config", str(config)],
                             capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    checked = subprocess.run([*role_command(daemon), "--check-config", str(config)],
                             capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    for result in (started, checked):
        assert result.returncode == 2, result
        assert message in result.stderr, result.stderr
        assert "valid" not in result.stdout
    assert not (tmp_path / "cache").exists()  # (refused before anything was made)


@pytest.mark.parametrize("daemon", sorted(CACHE_ON))
def test_a_cache_with_a_good_secret_passes_the_check(tmp_path: Path, daemon: str) -> None:
    settings = {key: value.replace("{tmp}", str(tmp_path)) if isinstance(value, str) else value
                for key, value in CACHE_ON[daemon].items()}  # fmt: skip
    settings["cache-secret-file"] = str(write_secret(tmp_path / "cache-secret"))
    config = tmp_path / f"{daemon}.toml"
    config.write_text(_toml(settings))
    result = subprocess.run([*role_command(daemon), "--check-config", str(config)],
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
