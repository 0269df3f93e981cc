"""One attempt on one backend (balancer/dispatch/sender.py), against tiny servers on
loopback in the test's own loop: the backend's books after each way an attempt ends
(a good reply, a turn-away, an error), its slot given back, and its connection known by
its local address while it is open."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from balancer.dispatch.sender import Sender
from balancer.pool.pool import Pool
from balancer.routing.backend import Backend, BackendSpec
from balancer.settings import DispatchSettings, PoolSettings
from client import ConnectFailed, TurnedAway
from wire import Limits, Reply, Request, encode_reply
from wire.stream import read_request

pytestmark = pytest.mark.asyncio

REQUEST = Request(protocol=1, argv=("gcc", "-c", "a.c", "-o", "a.o"), source=b"int a;\n")
GOOD = Reply(protocol=1, status=0, stderr=b"", stdout=b"", obj=b"\x7fELF object")

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def _backend(handler: Handler) -> AsyncIterator[tuple[Pool, Backend, list[str]]]:
    """A backend served by ``handler``; the peers it saw, as ``IP:PORT``."""
    peers: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = writer.get_extra_info("peername")[:2]
        peers.append(f"{host}:{port}")
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    backend = Backend(BackendSpec.parse(f"127.0.0.1:{port}"), rise=1, fall=1)
    backend.on_success()
    pool = Pool([], PoolSettings(poll_interval_s=0.5))  # never started
    pool.backends = {backend.name: backend}
    try:
        yield pool, backend, peers
    finally:
        server.close()
        await server.wait_closed()


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader, Limits(), idle_timeout_s=5)
    writer.write(encode_reply(GOOD))
    await writer.drain()


async def _close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    pass  # (a full distlb server closes without a reply: a turn-away)


def _sender(pool: Pool) -> Sender:
    return Sender(pool, DispatchSettings(connect_timeout_s=5), Limits())


async def test_a_good_reply_proves_the_backend_and_gives_its_slot_back() -> None:
    async with _backend(_answer) as (pool, backend, peers):
        backend.reserve()
        told: list[str] = []

        reply = await _sender(pool).start(backend, REQUEST, told.append)

        assert reply.obj == GOOD.obj
        assert (backend.good_replies, backend.failures, backend.in_flight) == (1, 0, 0)
        assert len(backend.latencies()) == 1
        # The connection the backend saw is the one we knew as ours, now closed.
        assert told == peers and len(peers) == 1
        assert len(backend.connections) == 0
        assert backend.connections.ours_among(peers) == 1


async def test_a_turn_away_holds_the_backend_briefly_and_is_no_failure() -> None:
    async with _backend(_close_at_once) as (pool, backend, _):
        backend.reserve()
        stale = pool.stale_future(backend)

        with pytest.raises(TurnedAway):
            await _sender(pool).start(backend, REQUEST)

        assert (backend.turned_away, backend.failures, backend.in_flight) == (1, 0, 0)
        assert not backend.available(time.monotonic())  # (held until its next report)
        assert stale.done()  # (its report loop asks afresh)
        assert backend.healthy


async def test_a_backend_that_cannot_be_reached_is_charged() -> None:
    async with _backend(_answer) as (pool, backend, _):
        pass  # (its server is closed: nothing listens on its port now)
    backend.reserve()

    with pytest.raises(ConnectFailed):
        await _sender(pool).start(backend, REQUEST)

    assert backend.failures == 1 and not backend.healthy  # (fall 1)
    assert backend.in_flight == 0 and len(backend.connections) == 0
