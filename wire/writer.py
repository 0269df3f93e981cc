"""Bytes out: requests and replies in protocol 1 or 2."""

from __future__ import annotations

from wire import lzo, tokens
from wire.errors import LocalProtocolError
from wire.events import PROTOCOL_LZO, SERVED_PROTOCOLS, Reply, Request


def _blob(name: bytes, data: bytes, protocol: int) -> list[bytes]:
    # distcc sends an empty body as length 0 even when compressing.
    if protocol == PROTOCOL_LZO and data:
        data = lzo.compress(data)
    return [tokens.encode(name, len(data)), data]


def _check_protocol(protocol: int) -> None:
    if protocol not in SERVED_PROTOCOLS:
        raise LocalProtocolError(f"cannot encode protocol {protocol}")


def encode_request(request: Request) -> bytes:
    """The bytes of ``request``. Raises :class:`LocalProtocolError` if it cannot be sent."""
    _check_protocol(request.protocol)
    if not request.argv:
        raise LocalProtocolError("a request needs at least the compiler's name")
    parts = [tokens.encode(b"DIST", request.protocol), tokens.encode(b"ARGC", len(request.argv))]
    for arg in request.argv:
        try:
            raw = arg.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError as exc:
            raise LocalProtocolError(f"argument {arg!r} cannot be encoded: {exc}") from exc
        if b"\0" in raw:
            raise LocalProtocolError(f"argument {arg!r} contains a NUL byte")
        parts += [tokens.encode(b"ARGV", len(raw)), raw]
    parts += _blob(b"DOTI", request.source, request.protocol)
    return b"".join(parts)


def encode_reply(reply: Reply) -> bytes:
    """The bytes of ``reply``; the object is sent only when the status is 0, as distccd does."""
    _check_protocol(reply.protocol)
    obj = reply.obj if reply.status == 0 else b""
    parts = [
        tokens.encode(b"DONE", reply.protocol),
        tokens.encode(b"STAT", reply.status),
        *_blob(b"SERR", reply.stderr, reply.protocol),
        *_blob(b"SOUT", reply.stdout, reply.protocol),
        *_blob(b"DOTO", obj, reply.protocol),
    ]
    return b"".join(parts)
