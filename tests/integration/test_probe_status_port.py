"""distlb-probe reads a server's slots from the status port its host word names
(``host:port,status=PORT``), not only from port+1, and keeps the word's options."""

from __future__ import annotations

import subprocess

import pytest

from tests.support.servers import StartServer, role_command

pytestmark = pytest.mark.integration


def test_probe_reads_the_named_status_port_and_keeps_the_options(
    start_server: StartServer,
) -> None:
    server = start_server("--jobs", "3")
    assert server.stats_port != server.port + 1  # else port+1 would find it anyway
    word = f"127.0.0.1:{server.port},lzo,status={server.stats_port}"
    result = subprocess.run([*role_command("probe"), word, "--deadline", "5"],
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [f"127.0.0.1:{server.port}/3,lzo"]
