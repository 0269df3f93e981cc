"""Acceptance 4: a full server turns work away at once; the real client compiles locally."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.support.distcc import run_distcc
from tests.support.projects import local_object
from tests.support.servers import StartServer, hold_a_slot, wait_until

pytestmark = pytest.mark.integration


def test_full_server_turns_away_and_real_client_falls_back(
    start_server: StartServer, fake_compilers: tuple[Path, Path], tmp_path: Path
) -> None:
    bin_dir, _ = fake_compilers
    server = start_server("--jobs", "1", "--compiler", "hang-cc", "--compiler", "gcc",
                          path_prepend=str(bin_dir))  # fmt: skip
    # A compile that never ends holds the one slot (a connection alone holds none).
    holder = hold_a_slot(server.port)
    try:
        wait_until(lambda: server.status()["busy"] == 1, 10, "the slot to be taken")
        status = server.status()
        assert status["free"] == 0
        # The report names the connection that holds the slot as its client knows it (a
        # balancer tells its own jobs from others' by it).
        assert status["holders"] == [f"127.0.0.1:{holder.getsockname()[1]}"]

        with socket.create_connection(("127.0.0.1", server.port)) as refused:
            refused.settimeout(10)
            assert refused.recv(1) == b"", "a full server closes the connection without a reply"
        wait_until(lambda: server.counters()["rejected_busy"] == 1, 5, "the rejection counted")

        (tmp_path / "f.c").write_text("int f(int x) { return x * 3; }\n")
        result = run_distcc(
            ["gcc", "-O2", "-c", "f.c", "-o", "f.o"],
            hosts=f"127.0.0.1:{server.port}",
            cwd=tmp_path,
            fallback=True,
        )
        assert result.returncode == 0, result.stderr
        assert "running locally instead" in result.stderr
        assert (tmp_path / "f.o").read_bytes() == local_object(tmp_path, tmp_path / "f.c",
                                                                "gcc", "-O2")  # fmt: skip
        counters = server.counters()
        assert counters["rejected_busy"] == 2
        assert counters["ok"] == 0 and counters["accepted"] == 1
        assert [e["reason"] for e in server.events("turned_away")] == ["busy", "busy"]
    finally:
        holder.close()
    wait_until(lambda: server.status()["busy"] == 0, 10, "the slot to be freed")
    assert server.status()["holders"] == []


def test_address_outside_allow_list_is_turned_away(start_server: StartServer) -> None:
    server = start_server("--allow", "10.0.0.0/8", "--status-allow", "127.0.0.0/8")
    with socket.create_connection(("127.0.0.1", server.port)) as conn:
        conn.settimeout(10)
        assert conn.recv(1) == b""
    wait_until(lambda: server.counters()["rejected_access"] == 1, 5, "the refusal counted")
    assert server.logged("turned_away")["reason"] == "address not allowed"
