"""The framing of distcc's GSSAPI handshake, sans-IO.

As distcc 3.x speaks it (``src/auth_distcc.c``, ``src/auth_distccd.c``): the
client sends one byte ``*`` and the server answers ``*``; then GSS tokens go
each way, each framed as a ``TLEN`` token (the length) and that many bytes,
until both contexts are complete; then the server sends one verdict byte, ``y``
(access granted) or ``n`` (denied), and the ordinary request follows on the same
connection. The GSSAPI calls themselves live elsewhere (``client/gss.py``); this
module only frames and judges bytes, and bounds every length before it is read.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Final

from wire import tokens
from wire.errors import LimitExceeded, LocalProtocolError, RemoteProtocolError
from wire.reader import TOKEN_HEADER, MessageReader, _NeedData

HANDSHAKE: Final = b"*"
"""Sent first by a client that wants to authenticate, echoed by a server that will."""
ACCESS_GRANTED: Final = b"y"
ACCESS_DENIED: Final = b"n"
TOKEN_NAME: Final = b"TLEN"
DEFAULT_MAX_TOKEN_BYTES: Final = 64 * 1024
"""A Kerberos AP-REQ is a few KiB even with a large PAC; 64 KiB leaves room."""


class AuthProtocolError(RemoteProtocolError):
    """The peer's bytes broke the authentication handshake."""


class NotAuthenticating(AuthProtocolError):
    """The peer did not start the handshake: a client without ``,auth`` (its first
    byte is the request's ``D``), or a server that does not authenticate."""

    def __init__(self, received: bytes) -> None:
        super().__init__(f"expected the handshake byte {HANDSHAKE!r}, got {received[:1]!r}")
        self.received = received[:1]


class AccessDenied(Exception):
    """The server authenticated us and then refused our principal (verdict ``n``).

    Not a protocol error: the peer followed the protocol and said no.
    """


def check_handshake(received: bytes) -> None:
    """Accept exactly the one handshake byte; raise :class:`NotAuthenticating` otherwise."""
    if received != HANDSHAKE:
        raise NotAuthenticating(received)


def verdict(granted: bool) -> bytes:
    """The server's last handshake byte."""
    return ACCESS_GRANTED if granted else ACCESS_DENIED


def check_verdict(received: bytes) -> None:
    """Judge the server's verdict byte: return when granted, raise :class:`AccessDenied`
    on ``n`` and :class:`AuthProtocolError` on anything else."""
    if received == ACCESS_GRANTED:
        return
    if received == ACCESS_DENIED:
        raise AccessDenied("the server refused our principal")
    raise AuthProtocolError(f"expected a verdict byte y or n, got {received[:1]!r}")


def encode_token(token: bytes, max_bytes: int = DEFAULT_MAX_TOKEN_BYTES) -> bytes:
    """One framed GSS token. distcc refuses empty tokens, so we never send one;
    raises :class:`LocalProtocolError` for an empty or oversized token."""
    if not token:
        raise LocalProtocolError("a GSS token must not be empty")
    if len(token) > max_bytes:
        raise LocalProtocolError(f"GSS token of {len(token)} bytes, limit is {max_bytes}")
    return tokens.encode(TOKEN_NAME, len(token)) + token


def _token_steps(max_bytes: int) -> Generator[int, bytes, bytes]:
    header = yield tokens.TOKEN_SIZE
    length = tokens.decode(header, TOKEN_NAME)
    if length == 0:
        raise AuthProtocolError("TLEN is 0: a GSS token is never empty")
    if length > max_bytes:
        raise LimitExceeded("TLEN", length, max_bytes)  # refused before reading the body
    return (yield length)


class TokenReader(MessageReader):
    """Parses one framed GSS token; the claimed length is checked before the body is read.

    ``next_event()`` returns :data:`wire.NEED_DATA` or the token's bytes, and raises
    :class:`RemoteProtocolError` (:class:`LimitExceeded` for a length over ``max_bytes``).
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_TOKEN_BYTES) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        super().__init__(_token_steps(max_bytes), TOKEN_HEADER + max_bytes)

    def next_event(self) -> bytes | _NeedData:
        result = self._advance()
        assert isinstance(result, bytes | _NeedData)
        return result
