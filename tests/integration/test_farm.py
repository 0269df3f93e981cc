"""The README's first command: scripts/farm.sh starts a working local farm."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from tests.support.distcc import run_make
from tests.support.projects import write_c_project
from tests.support.servers import port_open, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_farm_script_starts_a_farm_that_builds(tmp_path: Path) -> None:
    if any(port_open(p) for p in (3632, 3634, 3642, 3652)):
        pytest.fail("the farm's ports (3632, 3634, 3642, 3652) are taken on this machine")
    farm = subprocess.Popen(
        [str(ROOT / "scripts" / "farm.sh")], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(farm.stdout or []), daemon=True).start()
    try:
        wait_until(lambda: any("Ctrl-C stops the farm" in line for line in lines)
                   or farm.poll() is not None, 120, "the farm to start")  # fmt: skip
        text = "".join(lines)
        assert farm.poll() is None, text
        match = re.search(r'DISTCC_HOSTS="([^"]+)"', text)
        assert match, text
        project = write_c_project(tmp_path / "proj", modules=6)
        result = run_make(project, hosts=match.group(1), jobs=8)
        assert result.returncode == 0, result.stderr
    finally:
        if farm.poll() is None:
            os.killpg(farm.pid, signal.SIGINT)
            try:
                farm.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(farm.pid, signal.SIGKILL)
                farm.wait()
    wait_until(lambda: not any(port_open(p) for p in (3632, 3642, 3652)), 20,
               "the farm's processes gone")  # fmt: skip
