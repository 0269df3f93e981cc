"""Bytes in: incremental, bounded parsers for requests and replies.

Each parser is a small generator that asks for exactly the bytes it needs
next (``wanted``) and checks every claimed length against :class:`Limits`
before asking for the body. The driver holds the receive buffer. Feed it
bytes from anywhere; nothing here touches a socket or a clock.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Final

from wire import lzo, tokens
from wire.errors import LimitExceeded, RemoteProtocolError, UnsupportedProtocol, WireError
from wire.events import (
    COMPRESSED_PROTOCOLS,
    PROTOCOL_LZO,
    PROTOCOL_PUMP,
    SERVED_PROTOCOLS,
    CompressedReply,
    CompressedRequest,
    PumpEntry,
    PumpRequest,
    Reply,
    Request,
)
from wire.limits import Limits


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()
"""Returned by ``next_event`` until a whole message has been fed."""

# A step yields how many bytes it needs and is sent exactly that many.
_Steps = Generator[int, bytes, object]


def _token(name: bytes) -> Generator[int, bytes, int]:
    header = yield tokens.TOKEN_SIZE
    return tokens.decode(header, name)


def _body(name: bytes, length: int) -> Generator[int, bytes, bytes]:
    if length == 0:
        return b""
    return (yield length)


def _blob(
    name: bytes, protocol: int, raw_limit: int, plain_limit: int, inflate: bool = True
) -> Generator[int, bytes, bytes]:
    """A length-prefixed body, decompressed in protocol 2 (unless ``inflate`` is False).

    ``raw_limit`` bounds the bytes on the wire, ``plain_limit`` the bytes
    after decompression.
    """
    field = name.decode()
    length = yield from _token(name)
    if length > raw_limit:
        raise LimitExceeded(field, length, raw_limit)
    data = yield from _body(name, length)
    if protocol in COMPRESSED_PROTOCOLS and data and inflate:
        return lzo.decompress(data, plain_limit, field)
    return data


def _wire_limit(plain_limit: int) -> int:
    # LZO1X's worst case expansion, as distcc sizes its buffers.
    return plain_limit + plain_limit // 16 + 64 + 3


def _request_steps(
    limits: Limits, defer: bool = False
) -> Generator[int, bytes, Request | CompressedRequest | PumpRequest]:
    protocol = yield from _token(b"DIST")
    if protocol == PROTOCOL_PUMP:
        return (yield from _pump_steps(limits, defer))
    if protocol not in SERVED_PROTOCOLS:
        raise UnsupportedProtocol(protocol, "unknown version")
    argv = yield from _argv_steps(limits)
    raw_limit = (
        _wire_limit(limits.max_source_bytes)
        if protocol == PROTOCOL_LZO
        else limits.max_source_bytes
    )
    inflate = not (defer and protocol == PROTOCOL_LZO)
    source = yield from _blob(b"DOTI", protocol, raw_limit, limits.max_source_bytes, inflate)
    if not inflate:
        return CompressedRequest(protocol=protocol, argv=argv, compressed_source=source)
    return Request(protocol=protocol, argv=argv, source=source)


def _argv_steps(limits: Limits) -> Generator[int, bytes, tuple[str, ...]]:
    argc = yield from _token(b"ARGC")
    if argc == 0:
        raise RemoteProtocolError("ARGC is 0: a request needs at least the compiler's name")
    if argc > limits.max_argc:
        raise LimitExceeded("ARGC", argc, limits.max_argc)
    argv: list[str] = []
    total = 0
    for _ in range(argc):
        length = yield from _token(b"ARGV")
        if length > limits.max_arg_bytes:
            raise LimitExceeded("ARGV", length, limits.max_arg_bytes)
        total += length
        if total > limits.max_argv_total_bytes:
            raise LimitExceeded("ARGV total", total, limits.max_argv_total_bytes)
        raw = yield from _body(b"ARGV", length)
        if b"\0" in raw:
            raise RemoteProtocolError(f"ARGV {len(argv)} contains a NUL byte")
        argv.append(raw.decode("utf-8", "surrogateescape"))
    return tuple(argv)


def _path(name: bytes, limit: int) -> Generator[int, bytes, str]:
    """A ``CDIR``, ``NAME`` or ``LINK`` string: bounded, without NUL (checked as paths in
    wire.pump)."""
    length = yield from _token(name)
    return (yield from _path_body(name, length, limit))


def _path_body(name: bytes, length: int, limit: int) -> Generator[int, bytes, str]:
    if length > limit:
        raise LimitExceeded(name.decode(), length, limit)
    raw = yield from _body(name, length)
    if b"\0" in raw:
        raise RemoteProtocolError(f"{name.decode()} contains a NUL byte")
    return raw.decode("utf-8", "surrogateescape")


def _pump_steps(limits: Limits, defer: bool) -> Generator[int, bytes, PumpRequest]:
    """Protocol 3, as distcc's client sends it: ``CDIR``, the command line, ``NFIL`` and
    each file's ``NAME`` then its ``FILE`` body (LZO) or ``LINK`` target. Every count and
    length is bounded before its body is read; all files together inflate to at most
    ``limits.max_pump_bytes`` (checked here, or by wire.pump.inflate_entries when the
    bodies are left compressed)."""
    cwd = yield from _path(b"CDIR", limits.max_path_bytes)
    argv = yield from _argv_steps(limits)
    count = yield from _token(b"NFIL")
    if count > limits.max_files:
        raise LimitExceeded("NFIL", count, limits.max_files)
    entries: list[PumpEntry] = []
    left = limits.max_pump_bytes  # inflated bytes still allowed (raw ones when deferred)
    raw_left = _wire_limit(limits.max_pump_bytes)
    for _ in range(count):
        name = yield from _path(b"NAME", limits.max_path_bytes)
        header = yield tokens.TOKEN_SIZE
        if header[:4] == b"LINK":
            length = tokens.decode(header, b"LINK")
            target = yield from _path_body(b"LINK", length, limits.max_path_bytes)
            entries.append(PumpEntry(name, link=target))
            continue
        length = tokens.decode(header, b"FILE")
        most = min(_wire_limit(min(left, limits.max_source_bytes)), raw_left)
        if length > most:
            raise LimitExceeded("FILE", length, most)
        body = yield from _body(b"FILE", length)
        raw_left -= length
        if body and not defer:
            body = lzo.decompress(body, min(left, limits.max_source_bytes), "FILE")
            left -= len(body)
        entries.append(PumpEntry(name, body=body))
    return PumpRequest(PROTOCOL_PUMP, cwd, argv, tuple(entries), compressed=defer)


def _reply_steps(
    protocol: int, limits: Limits, defer: bool = False
) -> Generator[int, bytes, Reply | CompressedReply]:
    version = yield from _token(b"DONE")
    if version != protocol:
        raise RemoteProtocolError(f"reply is protocol {version}, request was {protocol}")
    status = yield from _token(b"STAT")
    compressed = protocol in COMPRESSED_PROTOCOLS
    inflate = not (defer and compressed)

    def raw(plain: int) -> int:
        return _wire_limit(plain) if compressed else plain

    out_limit = limits.max_output_bytes
    stderr = yield from _blob(b"SERR", protocol, raw(out_limit), out_limit, inflate)
    stdout = yield from _blob(b"SOUT", protocol, raw(out_limit), out_limit, inflate)
    obj_limit = limits.max_object_bytes
    obj = yield from _blob(b"DOTO", protocol, raw(obj_limit), obj_limit, inflate)
    deps = b""
    if protocol == PROTOCOL_PUMP and status == 0:
        deps = yield from _blob(b"DOTD", protocol, raw(out_limit), out_limit, inflate)
    if not inflate:
        return CompressedReply(protocol, status, stderr, stdout, obj, deps)
    return Reply(protocol, status, stderr, stdout, obj, deps)


SMALL_STEP = 4096
"""Up to this size a step's bytes are sliced out of the buffer (two small copies are
cheaper than a view's set-up); beyond, copied once through a view."""
TOKEN_HEADER = 12
"""A token's name and length: 4 + 8 bytes."""


def _compressed_bound(size: int) -> int:
    """The most bytes LZO1X may turn ``size`` bytes into (its worst case), with slack."""
    return size + size // 16 + 1024


class MessageReader:
    """Drives a step generator over a receive buffer."""

    def __init__(self, steps: Generator[int, bytes, object], max_buffer: int) -> None:
        self._steps: Generator[int, bytes, object] = steps
        self._buffer = bytearray()
        self._pos = 0
        """Where the unparsed bytes begin in the buffer: parsed bytes are dropped once
        a step waits for more (one shift of the buffer a wait, not one a token: a
        100 KB source behind a dozen tokens was moved a dozen times)."""
        self.max_buffer = max_buffer
        """Most bytes fed and not yet parsed: the largest whole message the limits
        allow. A caller may feed more than :attr:`wanted`, never more than this."""
        self._wanted = next(steps)
        self._result: object = NEED_DATA
        self._consumed = 0
        self._error: WireError | None = None
        self.on_bytes: Callable[[bytes], None] | None = None
        """Called with every chunk the parser consumes (e.g. to hash a job as it arrives)."""

    @property
    def wanted(self) -> int:
        """Bytes still missing before the parser can take its next step (0 when done)."""
        if self._result is not NEED_DATA:
            return 0
        return max(0, self._wanted - (len(self._buffer) - self._pos))

    @property
    def consumed(self) -> int:
        """Bytes of the message parsed so far."""
        return self._consumed

    @property
    def buffered(self) -> int:
        """Bytes fed but not yet parsed."""
        return len(self._buffer) - self._pos

    @property
    def trailing(self) -> bytes:
        """Bytes fed after the end of a complete message."""
        return bytes(self._buffer[self._pos :]) if self._result is not NEED_DATA else b""

    def feed(self, data: bytes) -> None:
        """Take received bytes; raises :class:`LimitExceeded` when they would hold more
        than any message the limits allow (the buffer stays bounded whoever feeds it)."""
        if self._error is not None:
            raise self._error
        held = len(self._buffer) - self._pos + len(data)
        if held > self.max_buffer:
            self._error = LimitExceeded("bytes buffered", held, self.max_buffer)
            raise self._error
        self._buffer += data

    def next_event(self) -> object:
        """The parsed message, or :data:`NEED_DATA`; raises :class:`RemoteProtocolError`."""
        return self._advance()

    def _advance(self) -> object:
        if self._error is not None:
            raise self._error  # a parser that failed stays failed
        buffer = self._buffer
        while self._result is NEED_DATA:
            start = self._pos
            end = start + self._wanted
            if len(buffer) < end:
                if start:
                    del buffer[:start]
                    self._pos = 0
                return NEED_DATA
            if end - start <= SMALL_STEP:
                chunk = bytes(buffer[start:end])
            else:
                with memoryview(buffer) as view:
                    chunk = bytes(view[start:end])  # (one copy of a body)
            self._pos = end
            self._consumed += len(chunk)
            if self.on_bytes is not None:
                self.on_bytes(chunk)
            try:
                self._wanted = self._steps.send(chunk)
            except StopIteration as done:
                self._result = done.value
            except WireError as exc:
                self._error = exc
                raise
        return self._result


class RequestReader(MessageReader):
    """Parses one compile request.

    ``next_event()`` returns :data:`NEED_DATA` or the :class:`Request`, and
    raises :class:`RemoteProtocolError` (or a subclass) for bad input. With
    ``defer_decompression``, a protocol 2 request comes back as a
    :class:`CompressedRequest` instead, its source left for the caller to inflate
    (:func:`wire.lzo.decompress`, bounded by ``limits.max_source_bytes``).
    """

    def __init__(self, limits: Limits | None = None, *, defer_decompression: bool = False) -> None:
        limits = limits or Limits()
        largest = (
            TOKEN_HEADER * (limits.max_argc + 4)
            + limits.max_argv_total_bytes
            + _compressed_bound(limits.max_source_bytes)
        )
        super().__init__(_request_steps(limits, defer_decompression), largest)

    def next_event(self) -> Request | CompressedRequest | PumpRequest | _NeedData:
        result = self._advance()
        assert isinstance(result, Request | CompressedRequest | PumpRequest | _NeedData)
        return result


class ReplyReader(MessageReader):
    """Parses one reply to a request sent in ``protocol``. With
    ``defer_decompression``, a protocol 2 reply comes back as a
    :class:`CompressedReply`, its bodies left for the caller to inflate
    (:func:`wire.stream.inflate_reply`)."""

    def __init__(
        self, protocol: int, limits: Limits | None = None, *, defer_decompression: bool = False
    ) -> None:
        limits = limits or Limits()
        bodies = 3 * limits.max_output_bytes + limits.max_object_bytes
        largest = TOKEN_HEADER * 8 + _compressed_bound(bodies)
        super().__init__(_reply_steps(protocol, limits, defer_decompression), largest)

    def next_event(self) -> Reply | CompressedReply | _NeedData:
        result = self._advance()
        assert isinstance(result, Reply | CompressedReply | _NeedData)
        return result
