"""FaultRelayForTests, the system tests' latency injector, on loopback."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.support.fault_relay import FaultRelayForTests

pytestmark = pytest.mark.integration

DELAY_S = 0.25


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while chunk := await reader.read(65536):
        writer.write(chunk)
        await writer.drain()
    writer.close()


@pytest_asyncio.fixture
async def relayed_echo() -> AsyncIterator[tuple[int, FaultRelayForTests]]:
    echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
    upstream_port = echo.sockets[0].getsockname()[1]
    relay = FaultRelayForTests(("127.0.0.1", 0), ("127.0.0.1", upstream_port), DELAY_S)
    await relay.start()
    assert relay.server is not None
    yield relay.server.sockets[0].getsockname()[1], relay
    await relay.close()
    echo.close()
    await echo.wait_closed()


@pytest.mark.asyncio
async def test_relay_adds_its_delay_each_way_and_keeps_every_byte_in_order(
    relayed_echo: tuple[int, FaultRelayForTests],
) -> None:
    port, _ = relayed_echo
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
    round_trip_s = time.monotonic() - started
    assert 2 * DELAY_S <= round_trip_s < 2 * DELAY_S + 1.0

    payload = os.urandom(2_000_000)  # many chunks: order and content must survive
    started = time.monotonic()

    async def send() -> None:
        writer.write(payload)
        await writer.drain()
        writer.write_eof()

    sending = asyncio.create_task(send())
    echoed = await asyncio.wait_for(reader.read(-1), 30)
    await sending
    assert echoed == payload, "bytes lost or reordered"
    # Pure latency, not a throughput cap: one delay per chunk would take over 15 s.
    assert time.monotonic() - started < 8
    writer.close()


@pytest.mark.asyncio
async def test_relay_closes_the_client_when_upstream_refuses() -> None:
    unused = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    dead_port = unused.sockets[0].getsockname()[1]
    unused.close()
    await unused.wait_closed()
    relay = FaultRelayForTests(("127.0.0.1", 0), ("127.0.0.1", dead_port), DELAY_S)
    await relay.start()
    try:
        assert relay.server is not None
        port = relay.server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            data = await asyncio.wait_for(reader.read(100), 10)
        except ConnectionResetError:
            data = b""
        assert data == b""
        writer.close()
    finally:
        await relay.close()
