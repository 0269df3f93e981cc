"""An asyncio distcc client: connect, send one request, read the reply.

Used by tests, probes and the balancer. Every failure is one of a few
typed errors, so that callers can tell "try another server" from "the
server answered badly".
"""

from __future__ import annotations

import asyncio

from client.gss import AuthError, Initiator, initiate
from wire import ConnectionClosed, Limits, RemoteProtocolError, Reply, Request
from wire.stream import encode_request_off_loop, read_reply


class ClientError(Exception):
    """Base of every error from :func:`compile_remote`."""


class ConnectFailed(ClientError):
    """The TCP connection could not be made (refused, unreachable, timed out)."""


class TurnedAway(ClientError):
    """The server closed the connection before any byte of a reply: it is busy or refused us."""


class TimedOut(ClientError):
    """The reply did not arrive within the deadline."""


class BadReply(ClientError):
    """The server's reply broke the protocol or a limit."""


class AuthFailed(ClientError):
    """The GSSAPI handshake failed, or the server refused our principal (``reason`` says)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


async def compile_remote(
    host: str,
    port: int,
    request: Request,
    *,
    connect_timeout_s: float = 2.0,
    timeout_s: float = 600.0,
    limits: Limits | None = None,
    auth: Initiator | None = None,
) -> Reply:
    """Send ``request`` to a distcc server and return its reply.

    ``timeout_s`` bounds the whole exchange after connecting. With ``auth``, the
    GSSAPI handshake (distcc's ``,auth``) comes first. Raises :class:`ConnectFailed`,
    :class:`AuthFailed`, :class:`TurnedAway`, :class:`TimedOut` or :class:`BadReply`.
    """
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), connect_timeout_s
        )
    except (OSError, TimeoutError) as exc:
        raise ConnectFailed(f"{host}:{port}: {str(exc) or type(exc).__name__}") from exc
    try:
        async with asyncio.timeout(timeout_s):
            if auth is not None:
                try:
                    await initiate(reader, writer, auth)
                except AuthError as exc:
                    raise AuthFailed(f"{host}:{port}: authentication: {exc}", exc.reason) from exc
            try:
                writer.write(await encode_request_off_loop(request))
                await writer.drain()
            except ConnectionError:
                # A server that turns us away may close while we are still sending.
                pass
            try:
                return await read_reply(reader, request.protocol, limits, idle_timeout_s=timeout_s)
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
