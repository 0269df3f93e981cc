"""Acceptance 6 (live): malformed input never crashes the server, leaks a temp dir or a child,
and a claimed 4 GiB DOTI is refused without being read."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from client import compile_remote
from daemon.bounds import REFUSAL_LOG_BURST
from tests.support.servers import ServerProcess, StartServer, live_children, wait_until
from wire import Request, encode_request, tokens

pytestmark = pytest.mark.integration

VALID = encode_request(Request(1, ("gcc", "-c", "a.c", "-o", "a.o"), b"int a;\n"))
VALID_LZO = encode_request(Request(2, ("gcc", "-c", "a.c", "-o", "a.o"), b"int a;\n" * 50))


def _send(port: int, payload: bytes, *, half_close: bool = True) -> bytes:
    """Send ``payload``, then read whatever comes back until the server closes."""
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.settimeout(30)
        try:
            conn.sendall(payload)
            if half_close:
                conn.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        except ConnectionError:
            return b""
        return b"".join(chunks)


def _crafted() -> dict[str, bytes]:
    header = tokens.encode(b"DIST", 1) + tokens.encode(b"ARGC", 5)
    argv = b"".join(
        tokens.encode(b"ARGV", len(a)) + a for a in (b"gcc", b"-c", b"a.c", b"-o", b"a.o")
    )
    return {
        "empty": b"",
        "truncated-token": VALID[:7],
        "truncated-body": VALID[:-3],
        "non-hex": b"DIST0000000g",
        "wrong-token": b"DOTI00000001",
        "pump-protocol": tokens.encode(b"DIST", 3) + VALID[12:],
        "unknown-protocol": tokens.encode(b"DIST", 99) + VALID[12:],
        "argc-zero": tokens.encode(b"DIST", 1) + tokens.encode(b"ARGC", 0),
        "argc-huge": tokens.encode(b"DIST", 1) + tokens.encode(b"ARGC", 0xFFFFFFFF),
        "argv-huge": header + tokens.encode(b"ARGV", 0x7FFFFFFF),
        "argv-nul": tokens.encode(b"DIST", 1) + tokens.encode(b"ARGC", 1)
        + tokens.encode(b"ARGV", 3) + b"g\0c",
        "lzo-garbage": tokens.encode(b"DIST", 2) + VALID_LZO[12:-40]
        + tokens.encode(b"DOTI", 16) + b"\xff" * 16,
        "doti-swapped": header + argv + tokens.encode(b"DOTO", 4) + b"abcd",
        "binary-noise": bytes(random.Random(7).randrange(256) for _ in range(4096)),
    }  # fmt: skip


def test_crafted_bad_requests_are_closed_and_counted(
    start_server: StartServer, server_tmp: Path
) -> None:
    server = start_server("--jobs", "2")
    cases = _crafted()
    for name, payload in cases.items():
        assert _send(server.port, payload) == b"", f"{name}: no reply is owed to a bad request"
    wait_until(
        lambda: server.counters()["bad_request"] == len(cases), 10, "every bad request counted"
    )
    # (the log is read by another thread: the count may come before the last line)
    wait_until(lambda: len(server.events("bad_request")) == len(cases), 10, "every line")
    reasons = [e["reason"] for e in server.events("bad_request")]
    assert all(reasons)
    assert any("expected token CDIR" in r for r in reasons)  # (a pump request without it)
    _assert_unharmed(server, server_tmp)


def test_claimed_4gib_doti_is_refused_without_being_read(
    start_server: StartServer, server_tmp: Path
) -> None:
    server = start_server("--jobs", "1")
    head = VALID[: VALID.index(b"DOTI")]
    with socket.create_connection(("127.0.0.1", server.port)) as conn:
        conn.settimeout(30)
        # Send only the claim and keep our side open: the server must not wait for the body.
        conn.sendall(head + tokens.encode(b"DOTI", 0xFFFFFFFF))
        assert conn.recv(1) == b""
    event = wait_until(lambda: server.event("bad_request"), 10, "the refusal logged")
    assert "DOTI claims 4294967295" in event["reason"]
    _assert_unharmed(server, server_tmp)


_mutation = st.tuples(
    st.sampled_from([VALID, VALID_LZO]),
    st.integers(0, len(VALID_LZO)),
    st.lists(st.tuples(st.integers(0, len(VALID_LZO) - 1), st.integers(1, 255)), max_size=4),
)


@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(mutations=st.lists(_mutation, min_size=25, max_size=25))
def test_fuzzed_requests_never_harm_the_server(
    start_server: StartServer,
    server_tmp: Path,
    mutations: list[tuple[bytes, int, list[tuple[int, int]]]],
) -> None:
    server = start_server("--jobs", "2")
    for base, cut, flips in mutations:
        mutated = bytearray(base[:cut])
        for position, mask in flips:
            if position < len(mutated):
                mutated[position] ^= mask
        _send(server.port, bytes(mutated))
    _assert_unharmed(server, server_tmp)
    server.stop()


def test_server_unharmed_after_fuzzing(start_server: StartServer, server_tmp: Path) -> None:
    server = start_server("--jobs", "2")
    rng = random.Random(2004)
    for _ in range(150):
        payload = bytearray(VALID_LZO if rng.random() < 0.5 else VALID)
        del payload[rng.randrange(len(payload)) :]
        for _ in range(rng.randrange(4)):
            if payload:
                payload[rng.randrange(len(payload))] ^= rng.randrange(1, 256)
        _send(server.port, bytes(payload))
    _assert_unharmed(server, server_tmp)


def _assert_unharmed(server: ServerProcess, server_tmp: Path) -> None:
    assert server.proc.poll() is None, "the server crashed"
    wait_until(lambda: server.status()["busy"] == 0, 10, "every slot free again")
    assert server.counters()["other"] == 0, "a job crashed inside the server"
    assert server.job_dirs() == [], "a job temp dir leaked"
    assert live_children(server.proc.pid) == [], "a child process leaked"
    # And it still compiles.
    # (without a half-close: like distccd, EOF from the client means it has gone)
    reply = _send(server.port, VALID, half_close=False)
    assert reply.startswith(b"DONE00000001STAT00000000"), reply[:40]


def test_a_flood_of_bad_requests_is_logged_within_the_refusal_budget(
    start_server: StartServer,
) -> None:
    """Bad requests are logged a burst at a time, then once a second, each line with how
    many it left out (a review's 280 garbage connections wrote a 240-byte line each)."""
    server = start_server("--jobs", "2")
    started = time.monotonic()
    for _ in range(300):
        assert _send(server.port, b"GARBAGE!" * 4) == b""
    elapsed = time.monotonic() - started
    wait_until(lambda: server.counters()["bad_request"] == 300, 30, "every one counted")
    # A job's line comes after every refusal's: once it is read, so are they.
    job = Request(1, ("gcc", "-c", "f.c", "-o", "f.o"), b"int f;\n")
    assert asyncio.run(compile_remote("127.0.0.1", server.port, job, timeout_s=60)).status == 0
    server.logged("job_done")
    assert len(server.events("bad_request")) <= REFUSAL_LOG_BURST + elapsed + 12
