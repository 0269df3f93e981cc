"""Startup refuses configurations that could only fail later, with a clear message."""

from __future__ import annotations

import os
import subprocess
import tempfile

import pytest

from tests.support.servers import server_command

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
