"""The unit tests need none of the real tools: with none on PATH they still run (the
tests that start real processes fail, each with the bootstrap hint)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_unit_tests_run_with_no_real_tool_on_path(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=str(tmp_path))  # an empty directory: no distcc, no gcc
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/unit/client/test_host_words.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "passed" in done.stdout
