"""Typed errors that say whose fault a protocol failure was (the h11 split)."""

from __future__ import annotations


class WireError(Exception):
    """Base of every error raised by :mod:`wire`."""


class RemoteProtocolError(WireError):
    """The peer's bytes broke the distcc protocol."""


class LimitExceeded(RemoteProtocolError):
    """The peer claimed a count or length above a configured limit.

    Raised from the token header alone: the claimed body is never read.
    """

    def __init__(self, field: str, claimed: int, limit: int) -> None:
        super().__init__(f"{field} claims {claimed}, limit is {limit}")
        self.field = field
        self.claimed = claimed
        self.limit = limit


class UnsupportedProtocol(RemoteProtocolError):
    """A well-formed request in a protocol version we do not serve (e.g. 3, pump)."""

    def __init__(self, version: int, reason: str) -> None:
        super().__init__(f"protocol {version} not supported: {reason}")
        self.version = version


class CompressionError(RemoteProtocolError):
    """An LZO body that does not decompress, or decompresses past its limit."""


class TooSlow(RemoteProtocolError):
    """The peer sent a body slower than the rate that earns the room held for it."""


class ConnectionClosed(RemoteProtocolError):
    """The peer closed the connection before a complete message."""

    def __init__(self, received_bytes: int, expected: str) -> None:
        super().__init__(f"connection closed after {received_bytes} bytes, expecting {expected}")
        self.received_bytes = received_bytes
        self.expected = expected


class LocalProtocolError(WireError):
    """We were asked to send something the protocol cannot carry."""
