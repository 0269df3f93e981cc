"""distcc tokens: 4 ASCII letters, 8 hex digits, then (for strings and blobs) the bytes."""

from __future__ import annotations

from wire.errors import LocalProtocolError, RemoteProtocolError

TOKEN_SIZE = 12
MAX_VALUE = 0xFFFFFFFF
_HEX = frozenset(b"0123456789abcdefABCDEF")


def encode(name: bytes, value: int) -> bytes:
    """One token header. Raises :class:`LocalProtocolError` for a bad name or value."""
    if len(name) != 4 or not name.isalpha() or not name.isascii():
        raise LocalProtocolError(f"token name must be 4 ASCII letters, got {name!r}")
    if not 0 <= value <= MAX_VALUE:
        raise LocalProtocolError(f"token {name.decode()} value {value} does not fit 32 bits")
    return name + b"%08x" % value


def decode(header: bytes, expected: bytes) -> int:
    """The value of a 12-byte token header that must be named ``expected``."""
    if len(header) != TOKEN_SIZE:
        raise RemoteProtocolError(f"token header must be {TOKEN_SIZE} bytes, got {len(header)}")
    name, digits = header[:4], header[4:]
    if name != expected:
        raise RemoteProtocolError(f"expected token {expected.decode()}, got {name!r}")
    if not _HEX.issuperset(digits):
        raise RemoteProtocolError(f"token {expected.decode()} has a non-hex value {digits!r}")
    return int(digits, 16)
