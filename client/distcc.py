"""An asyncio distcc client: connect, send one request, read the reply.

Used by tests, probes and the balancer. Every failure is one of a few
typed errors, so that callers can tell "try another server" from "the
server answered badly".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from client.gss import AuthError, initiate
from client.initiator import Initiator
from wire import ConnectionClosed, Limits, RemoteProtocolError, Reply, Request
from wire.events import CompressedReply
from wire.reader import ReplyReader
from wire.stream import (
    encode_request_off_loop,
    inflate_reply,
    read_chunk,
    read_reply,
    sent_already,
    to_read,
)


class ClientError(Exception):
    """Base of every error from :func:`compile_remote`."""


class ConnectFailed(ClientError):
    """The TCP connection could not be made (refused, unreachable, timed out)."""


class TurnedAway(ClientError):
    """The server closed the connection before any byte of a reply: it is busy or refused us."""


class TimedOut(ClientError):
    """The reply did not arrive within the deadline."""


MIN_RATE_BYTES_S = 1024 * 1024
"""The slowest transfer an idle bound allows (beyond the bound itself)."""


class Stalled(ClientError):
    """A transfer to or from the server stopped, or crawled, past its idle bound."""


class BadReply(ClientError):
    """The server's reply broke the protocol or a limit."""


class AuthFailed(ClientError):
    """The GSSAPI handshake failed, or the server refused our principal (``reason`` says)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def address_text(address: object) -> str:
    """A socket address as both daemons log a connection's ends: ``IP:PORT``
    (``[IP]:PORT`` for IPv6), from the tuple asyncio gives (``?`` when there is none)."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return "?"


async def compile_remote(
    host: str,
    port: int,
    request: Request,
    *,
    connect_timeout_s: float = 2.0,
    timeout_s: float = 600.0,
    limits: Limits | None = None,
    auth: Initiator | None = None,
    idle_timeout_s: float | None = None,
    on_connected: Callable[[str], None] | None = None,
    encoded: bytes | None = None,
) -> Reply:
    """Send ``request`` to a distcc server and return its reply.

    ``timeout_s`` bounds the whole exchange after connecting. With ``idle_timeout_s``,
    sending the request, and receiving the reply once its first byte has come, may
    each take that long plus a second per MiB (:data:`MIN_RATE_BYTES_S`): a server that
    hangs or trickles mid-transfer is given up on. (While it compiles, a server sends
    nothing: that wait is bounded by ``timeout_s`` only.) With ``auth``, the GSSAPI
    handshake (distcc's ``,auth``) comes first. ``on_connected`` is called with the
    connection's local ``IP:PORT`` (:func:`address_text`) once it is made: a distlb
    server logs that as the job's ``peer``, so the caller can log the same connection.
    ``encoded``: ``request``'s bytes, made once by a caller that sends it more than once
    (a balancer's retries and hedges share one copy).
    Raises :class:`ConnectFailed`, :class:`AuthFailed`, :class:`TurnedAway`,
    :class:`TimedOut` or :class:`BadReply`.
    """
    try:
        # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancel that
        # arrives as the connect fails, so a cancelled caller would go on (and a probe
        # loop, or a job whose client left, would never end).
        async with asyncio.timeout(connect_timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError) as exc:
        raise ConnectFailed(f"{host}:{port}: {str(exc) or type(exc).__name__}") from exc
    try:
        if on_connected is not None:
            on_connected(address_text(writer.get_extra_info("sockname")))
        async with asyncio.timeout(timeout_s):
            if auth is not None:
                try:
                    await initiate(reader, writer, auth)
                except AuthError as exc:
                    raise AuthFailed(f"{host}:{port}: authentication: {exc}", exc.reason) from exc
            data = encoded if encoded is not None else await encode_request_off_loop(request)
            try:
                writer.write(data)
                if not sent_already(writer):
                    async with _transfer_bound(idle_timeout_s, len(data), f"{host}:{port}", "send"):
                        await writer.drain()
            except ConnectionError:
                # A server that turns us away may close while we are still sending.
                pass
            try:
                if idle_timeout_s is None:
                    return await read_reply(
                        reader, request.protocol, limits, idle_timeout_s=timeout_s
                    )
                reply = await _read_reply_bounded(
                    reader,
                    ReplyReader(request.protocol, limits, defer_decompression=True),
                    idle_timeout_s,
                    f"{host}:{port}",
                )
                if isinstance(reply, CompressedReply):
                    # Inflated off the loop: a 1 MB reply may inflate to 256 MiB (a
                    # balancer's /healthz stalled 1.3 s when it was inflated on it).
                    return await inflate_reply(reply, limits)
                return reply
            except ConnectionClosed as exc:
                if exc.received_bytes == 0:
                    raise TurnedAway(
                        f"{host}:{port} closed the connection without a reply"
                    ) from exc
                raise BadReply(f"{host}:{port}: {exc}") from exc
            except ConnectionError as exc:
                raise TurnedAway(f"{host}:{port}: {exc}") from exc
            except RemoteProtocolError as exc:
                raise BadReply(f"{host}:{port}: {exc}") from exc
    except TimeoutError as exc:
        raise TimedOut(f"{host}:{port}: no reply within {timeout_s} s") from exc
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def _transfer_bound(
    idle_timeout_s: float | None, size: int, peer: str, what: str
) -> AsyncIterator[None]:
    if idle_timeout_s is None:
        yield
        return
    bound = idle_timeout_s + size / MIN_RATE_BYTES_S
    try:
        async with asyncio.timeout(bound):
            yield
    except TimeoutError as exc:
        raise Stalled(f"{peer}: could not {what} {size} bytes in {bound:.1f} s") from exc


async def _read_reply_bounded(
    reader: asyncio.StreamReader, parser: ReplyReader, idle_timeout_s: float, peer: str
) -> Reply | CompressedReply:
    """Read a reply: the first byte whenever it comes (the compile takes its time), the
    rest within ``idle_timeout_s`` plus a second per MiB of what the reply claims."""
    loop = asyncio.get_running_loop()
    first_at: float | None = None
    while True:
        event = parser.next_event()
        if isinstance(event, Reply | CompressedReply):
            return event
        if first_at is None:
            data = await read_chunk(reader, to_read(reader, parser), None)
            first_at = loop.time()
        else:
            claimed = parser.consumed + parser.buffered + parser.wanted
            deadline = first_at + idle_timeout_s + claimed / MIN_RATE_BYTES_S
            try:
                data = await read_chunk(reader, to_read(reader, parser), deadline)
            except TimeoutError as exc:
                raise Stalled(
                    f"{peer}: reply stalled at {parser.consumed + parser.buffered} bytes, "
                    f"{loop.time() - first_at:.1f} s after it began"
                ) from exc
        if not data:
            raise ConnectionClosed(parser.consumed + parser.buffered, "a reply")
        parser.feed(data)
