"""The thin asyncio adapter: read one message from a StreamReader, bounded in size and time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from wire import lzo
from wire.auth import DEFAULT_MAX_TOKEN_BYTES, TokenReader
from wire.errors import ConnectionClosed, LimitExceeded, TooSlow
from wire.events import (
    CompressedReply,
    CompressedRequest,
    PumpEntry,
    PumpRequest,
    Reply,
    Request,
)
from wire.limits import Limits
from wire.reader import NEED_DATA, MessageReader, ReplyReader, RequestReader
from wire.writer import encode_reply, encode_request

CHUNK_BYTES = 256 * 1024
TOKEN_WHAT = "a GSS token"  # noqa: S105 (what we were reading, in error messages)


def buffered(reader: asyncio.StreamReader) -> int:
    """Bytes the reader holds already: a read of them returns without waiting."""
    buffer = getattr(reader, "_buffer", None)
    return len(buffer) if buffer is not None else 0


async def read_chunk(reader: asyncio.StreamReader, wanted: int, deadline: float | None) -> bytes:
    """Up to ``wanted`` bytes (at most CHUNK_BYTES); :class:`TimeoutError` if none have
    come by ``deadline`` (loop time; None: no bound). Bytes already buffered are read
    without setting up a timer: most reads of a message find theirs there."""
    wanted = min(wanted, CHUNK_BYTES)
    if deadline is None or buffered(reader):
        return await reader.read(wanted)
    async with asyncio.timeout_at(deadline):
        return await reader.read(wanted)


def to_read(reader: asyncio.StreamReader, parser: MessageReader) -> int:
    """How much to read for ``parser`` next: what it wants, or, where more is buffered
    already, all of that (within the parser's bound): one read takes a small message
    whole, rather than one read a token, and holds no byte more (the stream holds them
    either way). Only for a message that ends its connection's side: bytes past its end
    are never another message's."""
    room = parser.max_buffer - parser.buffered
    return max(parser.wanted, min(buffered(reader), CHUNK_BYTES, room))


Reserve = Callable[[int], Awaitable[None]]
"""Called before each read with the bytes the message will hold once the part being
read is in (and may wait for room to hold them): e.g. a daemon's request budget."""

EARN_FROM_BYTES = 1024 * 1024
EARN_RATE_BYTES_S = 1024 * 1024
EARN_GRACE_S = 5.0
"""Room reserved for a body more than EARN_FROM_BYTES ahead of what has arrived must be
earned: from the first wait with that much ahead, the body arrives at EARN_RATE_BYTES_S
on average after EARN_GRACE_S, or the message is given up (:class:`wire.TooSlow`). The
room is reserved whole before the body (two half-read requests never wait for each
other's room), so without this a peer that claims 256 MiB and trickles a byte a
minute held that room until the request timeout (a review took a balancer's budget
with nine such connections of 80 bytes each)."""


async def _drive(
    reader: asyncio.StreamReader,
    parser: MessageReader,
    what: str,
    idle_timeout_s: float,
    reserve: Reserve | None = None,
    *,
    whole: bool = False,
    first_byte_timeout_s: float | None = None,
) -> object:
    """Feed ``parser`` from ``reader`` until it has its message. ``whole``: the message
    is the last its peer sends (a request, a reply): reads may take all that is
    buffered (:func:`to_read`); else exactly what the parser asks for (a token that
    other bytes follow). ``first_byte_timeout_s``: a shorter wait for the first byte."""
    earning: tuple[float, int] | None = None  # (since, bytes in then): see EARN_FROM_BYTES
    while True:
        event = parser.next_event()
        if event is not NEED_DATA:
            return event
        if reserve is not None:
            await reserve(parser.consumed + parser.buffered + parser.wanted)
        # Never more than the parser's bound, nor than is wanted or already buffered.
        wanted = to_read(reader, parser) if whole else parser.wanted
        if buffered(reader):
            data = await reader.read(min(wanted, CHUNK_BYTES))  # (no timer: it is there)
        else:
            wait_s = idle_timeout_s
            if first_byte_timeout_s is not None and parser.consumed + parser.buffered == 0:
                wait_s = min(idle_timeout_s, first_byte_timeout_s)
            now = asyncio.get_running_loop().time()
            deadline = now + wait_s
            earned_by = None
            if reserve is not None and parser.wanted > EARN_FROM_BYTES:
                received = parser.consumed + parser.buffered
                if earning is None:
                    earning = (now, received)
                earned_by = earning[0] + EARN_GRACE_S + (received - earning[1]) / EARN_RATE_BYTES_S
                deadline = min(deadline, max(now, earned_by))
            try:
                data = await read_chunk(reader, wanted, deadline)
            except TimeoutError:
                if earned_by is not None and deadline == max(now, earned_by):
                    raise TooSlow(
                        f"{what} came slower than {EARN_RATE_BYTES_S >> 20} MiB/s while the "
                        f"room for its {parser.wanted} more bytes was held"
                    ) from None
                raise
        if not data:
            raise ConnectionClosed(parser.consumed + parser.buffered, what)
        parser.feed(data)


Inflate = Callable[[bytes, int], Awaitable[bytes]]
"""Decompresses an LZO body into at most the given number of bytes (and may wait for
room to): e.g. :meth:`daemon.budgets.InflateBudget.inflate`."""


async def read_request(
    reader: asyncio.StreamReader,
    limits: Limits | None = None,
    *,
    idle_timeout_s: float = 60.0,
    parser: RequestReader | None = None,
    inflate: Inflate | None = None,
    reserve: Reserve | None = None,
    first_byte_timeout_s: float | None = None,
) -> Request | PumpRequest:
    """Read one whole request (a :class:`PumpRequest` in protocol 3, its files inflated).

    With ``inflate``, a protocol 2 source is decompressed by it (off the event loop,
    within a budget) rather than by the parser, on the loop. With ``reserve``, room for
    each part is asked for before it is read (a body's claimed length, before any byte
    of it is read). Raises
    :class:`wire.RemoteProtocolError` (incl. :class:`ConnectionClosed`) and
    :class:`TimeoutError` when no byte arrives for ``idle_timeout_s``. Callers bound
    the total time with ``asyncio.timeout``.
    """
    limits = limits or Limits()
    parser = parser or RequestReader(limits, defer_decompression=inflate is not None)
    result = await _drive(reader, parser, "a request", idle_timeout_s, reserve, whole=True,
                          first_byte_timeout_s=first_byte_timeout_s)  # fmt: skip
    if isinstance(result, CompressedRequest):
        assert inflate is not None
        source = await inflate(result.compressed_source, limits.max_source_bytes)
        return Request(result.protocol, result.argv, source)
    if isinstance(result, PumpRequest) and result.compressed:
        assert inflate is not None
        return await inflate_pump(result, limits, inflate)
    assert isinstance(result, Request | PumpRequest)
    return result


async def inflate_pump(request: PumpRequest, limits: Limits, inflate: Inflate) -> PumpRequest:
    """``request`` (read with its bodies left compressed) with each file inflated by
    ``inflate``, all of them together within ``limits.max_pump_bytes``. Raises
    :class:`wire.LimitExceeded` or :class:`wire.CompressionError`."""
    left = limits.max_pump_bytes
    entries = []
    for entry in request.entries:
        if entry.link is None and entry.body:
            if left <= 0:
                raise LimitExceeded("FILE total (decompressed)", left + 1, limits.max_pump_bytes)
            body = await inflate(entry.body, min(left, limits.max_source_bytes))
            left -= len(body)
            entry = PumpEntry(entry.name, body=body)
        entries.append(entry)
    return PumpRequest(request.protocol, request.cwd, request.argv, tuple(entries))


LOOP_CODEC_BYTES = 256 * 1024
"""Bodies up to this size are (de)compressed on the event loop; larger ones in a thread."""


def sent_already(writer: asyncio.StreamWriter) -> bool:
    """Whether everything written has gone to the kernel (a small message's write goes
    out at once): no drain, nor a timer to bound it, is needed then. A transport that is
    closing may have dropped what was written: its drain must say so."""
    transport = writer.transport
    return transport.get_write_buffer_size() == 0 and not transport.is_closing()


async def drain_within(writer: asyncio.StreamWriter, timeout_s: float) -> None:
    """Wait at most ``timeout_s`` for what was written to leave (no timer when it has
    already: :func:`sent_already`). Raises ``ConnectionError``, ``TimeoutError``."""
    if sent_already(writer):
        return
    async with asyncio.timeout(timeout_s):
        await writer.drain()


async def write_reply(writer: asyncio.StreamWriter, reply: Reply, timeout_s: float) -> int:
    """Send ``reply`` (encoded off the loop when large), waiting at most ``timeout_s``
    for the peer to take it; the bytes sent. Raises ``ConnectionError``, ``TimeoutError``."""
    data = await encode_reply_off_loop(reply)
    writer.write(data)
    await drain_within(writer, timeout_s)
    return len(data)


async def encode_reply_off_loop(reply: Reply) -> bytes:
    """:func:`wire.encode_reply`, in a thread when the bodies are large (protocol 2
    compresses them: a 256 MiB object would stop the loop for a second)."""
    size = len(reply.obj) + len(reply.stderr) + len(reply.stdout)
    if size <= LOOP_CODEC_BYTES:
        return encode_reply(reply)
    return await asyncio.to_thread(encode_reply, reply)


async def encode_request_off_loop(request: Request) -> bytes:
    """:func:`wire.encode_request`, in a thread when the source is large."""
    if len(request.source) <= LOOP_CODEC_BYTES:
        return encode_request(request)
    return await asyncio.to_thread(encode_request, request)


async def inflate_off_loop(data: bytes, max_size: int, field: str) -> bytes:
    """:func:`wire.lzo.decompress`, on the loop when ``data`` is small and inflates
    within LOOP_CODEC_BYTES (most bodies: a thread's round trip costs more), else in a
    thread: a 1 MB body may inflate to 256 MiB, a second and more of work."""
    if len(data) <= LOOP_CODEC_BYTES // 4 and max_size >= LOOP_CODEC_BYTES:
        plain = lzo.decompress_within(data, LOOP_CODEC_BYTES, field)
        if plain is not None:
            return plain
    return await asyncio.to_thread(lzo.decompress, data, max_size, field)


async def inflate_reply(reply: CompressedReply, limits: Limits | None = None) -> Reply:
    """A reply's bodies inflated (:func:`inflate_off_loop`), each within its limit.
    Raises what :func:`wire.lzo.decompress` raises."""
    limits = limits or Limits()

    async def body(data: bytes, max_size: int, field: str) -> bytes:
        return await inflate_off_loop(data, max_size, field) if data else b""

    out = limits.max_output_bytes
    return Reply(
        reply.protocol,
        reply.status,
        await body(reply.stderr, out, "SERR"),
        await body(reply.stdout, out, "SOUT"),
        await body(reply.obj, limits.max_object_bytes, "DOTO"),
        await body(reply.deps, out, "DOTD"),
    )


async def read_reply(
    reader: asyncio.StreamReader,
    protocol: int,
    limits: Limits | None = None,
    *,
    idle_timeout_s: float = 60.0,
) -> Reply:
    """Read one whole reply to a request sent in ``protocol``, its bodies inflated off
    the loop (:func:`inflate_reply`); errors as :func:`read_request`."""
    parser = ReplyReader(protocol, limits, defer_decompression=True)
    result = await _drive(reader, parser, "a reply", idle_timeout_s, whole=True)
    if isinstance(result, CompressedReply):
        return await inflate_reply(result, limits)
    assert isinstance(result, Reply)
    return result


async def wait_peer_gone(reader: asyncio.StreamReader) -> None:
    """Return when the peer closes its side or sends anything.

    After a request the distcc protocol gives the client nothing to say, so any
    byte, EOF or reset means it has gone (as distccd also judges).
    """
    try:
        await reader.read(1)
    except ConnectionError:
        return


async def read_byte(reader: asyncio.StreamReader, what: str, idle_timeout_s: float) -> bytes:
    """One byte (a handshake marker or verdict); :class:`ConnectionClosed` on EOF,
    :class:`TimeoutError` when none arrives within ``idle_timeout_s``."""
    async with asyncio.timeout(idle_timeout_s):
        data = await reader.read(1)
    if not data:
        raise ConnectionClosed(0, what)
    return data


async def read_auth_token(
    reader: asyncio.StreamReader,
    max_bytes: int = DEFAULT_MAX_TOKEN_BYTES,
    *,
    idle_timeout_s: float = 10.0,
) -> bytes:
    """One framed GSS token (``TLEN`` + bytes), its length checked before the body is
    read; errors as :func:`read_request`."""
    result = await _drive(reader, TokenReader(max_bytes), TOKEN_WHAT, idle_timeout_s)
    assert isinstance(result, bytes)
    return result
