"""Cache secrets (and Redis passwords) for the daemons under test: files only their
owner can read, as the daemons require (daemon/secret_files.py)."""

from __future__ import annotations

import atexit
import functools
import os
import secrets
import shutil
import tempfile
from pathlib import Path


def write_secret(path: Path, content: bytes | None = None, mode: int = 0o600) -> Path:
    """``path`` holding ``content`` (default: 64 random hex digits and a newline, as
    ``openssl rand -hex 32`` writes), with ``mode``."""
    data = content if content is not None else secrets.token_hex(32).encode() + b"\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    path.chmod(mode)
    return path


@functools.cache
def farm_secret() -> Path:
    """One cache secret for every balancer and server the tests start (as one farm's
    balancers share theirs); removed when the test run ends."""
    directory = Path(tempfile.mkdtemp(prefix="distlb-secret-"))
    atexit.register(shutil.rmtree, directory, True)
    return write_secret(directory / "cache-secret")
