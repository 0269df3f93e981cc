"""Real headless Chromium for the pages' tests."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path


def headless_flags(profile: str) -> list[str]:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed (scripts/bootstrap.sh installs it)"
    return [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=3000",
    ]  # fmt: skip


def dump_dom(url: str, screenshot: Path | None = None) -> str:
    """The page's DOM after its scripts ran (and, with ``screenshot``, a picture)."""
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        flags = headless_flags(profile)
        dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True,
                             timeout=120, check=True).stdout  # fmt: skip
        if screenshot is not None:
            subprocess.run([*flags, "--window-size=1200,420", f"--screenshot={screenshot}", url],
                           capture_output=True, timeout=120, check=True)  # fmt: skip
        return dom
    finally:
        shutil.rmtree(profile, ignore_errors=True)
