"""Bytes out: requests and replies in protocol 1, 2 or 3 (pump)."""

from __future__ import annotations

from wire import lzo, tokens
from wire.errors import LocalProtocolError
from wire.events import (
    COMPRESSED_PROTOCOLS,
    PROTOCOL_PUMP,
    SERVED_PROTOCOLS,
    PumpRequest,
    Reply,
    Request,
)


def _blob(name: bytes, data: bytes, protocol: int) -> list[bytes]:
    # distcc sends an empty body as length 0 even when compressing.
    if protocol in COMPRESSED_PROTOCOLS and data:
        data = lzo.compress(data)
    return [tokens.encode(name, len(data)), data]


def _check_protocol(protocol: int) -> None:
    if protocol not in (*SERVED_PROTOCOLS, PROTOCOL_PUMP):
        raise LocalProtocolError(f"cannot encode protocol {protocol}")


def _string(name: bytes, text: str) -> list[bytes]:
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"{name.decode()} {text!r} cannot be encoded: {exc}") from exc
    if b"\0" in raw:
        raise LocalProtocolError(f"{name.decode()} {text!r} contains a NUL byte")
    return [tokens.encode(name, len(raw)), raw]


def encode_request(request: Request) -> bytes:
    """The bytes of ``request``. Raises :class:`LocalProtocolError` if it cannot be sent."""
    if request.protocol not in SERVED_PROTOCOLS:
        raise LocalProtocolError(f"cannot encode protocol {request.protocol}")
    parts = [tokens.encode(b"DIST", request.protocol), *_argv(request.argv)]
    parts += _blob(b"DOTI", request.source, request.protocol)
    return b"".join(parts)


def _argv(argv: tuple[str, ...]) -> list[bytes]:
    if not argv:
        raise LocalProtocolError("a request needs at least the compiler's name")
    parts = [tokens.encode(b"ARGC", len(argv))]
    for arg in argv:
        parts += _string(b"ARGV", arg)
    return parts


def encode_pump_request(request: PumpRequest) -> bytes:
    """The bytes of a protocol 3 request, as distcc's client sends it (bodies LZO
    compressed here unless ``request.compressed`` says they already are)."""
    parts = [tokens.encode(b"DIST", PROTOCOL_PUMP), *_string(b"CDIR", request.cwd)]
    parts += _argv(request.argv)
    parts.append(tokens.encode(b"NFIL", len(request.entries)))
    for entry in request.entries:
        parts += _string(b"NAME", entry.name)
        if entry.link is not None:
            parts += _string(b"LINK", entry.link)
        elif request.compressed:
            parts += [tokens.encode(b"FILE", len(entry.body)), entry.body]
        else:
            parts += _blob(b"FILE", entry.body, PROTOCOL_PUMP)
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
    if reply.protocol == PROTOCOL_PUMP and reply.status == 0:
        parts += _blob(b"DOTD", reply.deps, reply.protocol)
    return b"".join(parts)
