"""Properties of the codec over generated input.

Any request or reply we can encode parses back to itself however the bytes are
split; and no input whatsoever makes a parser raise anything but a
:class:`wire.RemoteProtocolError` (or say it needs more data).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from wire import (
    NEED_DATA,
    Limits,
    RemoteProtocolError,
    Reply,
    ReplyReader,
    Request,
    RequestReader,
    WireError,
    encode_reply,
    encode_request,
)
from wire.reader import MessageReader
from wire.tokens import TOKEN_SIZE

KiB = 1024
# Small enough that a hostile LZO stream cannot make an example slow.
FUZZ_LIMITS = Limits(
    max_source_bytes=64 * KiB, max_object_bytes=64 * KiB, max_output_bytes=64 * KiB
)
ROUND_TRIP = settings(max_examples=100, deadline=None, database=None)
FUZZ = settings(max_examples=200, deadline=None, database=None)
_BODY_TOKENS = frozenset({b"ARGV", b"DOTI", b"SERR", b"SOUT", b"DOTO"})
_NOT_HEX = [b for b in range(256) if b not in b"0123456789abcdefABCDEF"]

protocols = st.sampled_from([1, 2])
arguments = st.binary(max_size=24).map(
    lambda raw: raw.replace(b"\0", b"").decode("utf-8", "surrogateescape")
)
bodies = st.one_of(
    st.binary(max_size=600),
    # Repetitive bodies, so that LZO finds matches and not only literals.
    st.builds(
        lambda chunk, times: chunk * times,
        st.binary(min_size=1, max_size=16),
        st.integers(min_value=1, max_value=300),
    ),
)
requests = st.builds(
    Request,
    protocol=protocols,
    argv=st.lists(arguments, min_size=1, max_size=6).map(tuple),
    source=bodies,
)
replies = st.builds(
    Reply,
    protocol=protocols,
    status=st.one_of(st.just(0), st.integers(min_value=0, max_value=0xFFFFFFFF)),
    stderr=bodies,
    stdout=bodies,
    obj=bodies,
)


def split(data: bytes, draw: Callable[..., object]) -> list[bytes]:
    cuts = draw(st.lists(st.integers(min_value=0, max_value=len(data)), max_size=20))
    assert isinstance(cuts, list)
    edges = [0, *sorted(cuts), len(data)]
    return [data[start:end] for start, end in pairwise(edges)]


def outcome(parser: MessageReader, chunks: list[bytes]) -> object:
    """The parser's last answer after the chunks, or the WireError it raised.

    Any other exception escapes and fails the test.
    """
    event: object = parser.next_event()
    try:
        for chunk in chunks:
            parser.feed(chunk)
            event = parser.next_event()
            if event is not NEED_DATA:
                return event
    except WireError as error:
        return error
    return event


def assert_only_remote_errors(result: object) -> None:
    if isinstance(result, WireError):
        assert isinstance(result, RemoteProtocolError), repr(result)
        assert str(result), "a refusal says why"


def segments(message: bytes) -> list[bytes]:
    """A well-formed message cut into its tokens, each header with its body."""
    parts = []
    position = 0
    while position < len(message):
        header = message[position : position + TOKEN_SIZE]
        length = int(header[4:], 16) if header[:4] in _BODY_TOKENS else 0
        parts.append(message[position : position + TOKEN_SIZE + length])
        position += TOKEN_SIZE + length
    return parts


def reader_for(message: object) -> MessageReader:
    if isinstance(message, Request):
        return RequestReader(FUZZ_LIMITS)
    assert isinstance(message, Reply)
    return ReplyReader(message.protocol, FUZZ_LIMITS)


def encoded(message: Request | Reply) -> bytes:
    return encode_request(message) if isinstance(message, Request) else encode_reply(message)


messages = st.one_of(requests, replies)


# --- round trips ---------------------------------------------------------------


@given(request=requests, data=st.data())
@ROUND_TRIP
def test_any_request_round_trips_however_it_is_split(request: Request, data: st.DataObject) -> None:
    wire_bytes = encode_request(request)
    parser = RequestReader()
    fed = 0
    for chunk in split(wire_bytes, data.draw):
        parser.feed(chunk)
        fed += len(chunk)
        event = parser.next_event()
        if fed < len(wire_bytes):
            assert event is NEED_DATA
    assert event == request
    assert parser.trailing == b""


@given(reply=replies, data=st.data())
@ROUND_TRIP
def test_any_reply_round_trips_however_it_is_split(reply: Reply, data: st.DataObject) -> None:
    wire_bytes = encode_reply(reply)
    parser = ReplyReader(reply.protocol)
    fed = 0
    for chunk in split(wire_bytes, data.draw):
        parser.feed(chunk)
        fed += len(chunk)
        event = parser.next_event()
        if fed < len(wire_bytes):
            assert event is NEED_DATA
    # distccd sends the object only for a successful compile.
    expected_obj = reply.obj if reply.status == 0 else b""
    assert event == Reply(
        protocol=reply.protocol,
        status=reply.status,
        stderr=reply.stderr,
        stdout=reply.stdout,
        obj=expected_obj,
    )


# --- malformed input ------------------------------------------------------------


@given(message=messages, data=st.data())
@FUZZ
def test_truncated_message_only_ever_needs_more_data(
    message: Request | Reply, data: st.DataObject
) -> None:
    wire_bytes = encoded(message)
    cut = data.draw(st.integers(min_value=0, max_value=len(wire_bytes) - 1))

    result = outcome(reader_for(message), split(wire_bytes[:cut], data.draw))

    assert result is NEED_DATA


@given(message=messages, data=st.data())
@FUZZ
def test_byte_flipped_message_is_parsed_refused_or_incomplete(
    message: Request | Reply, data: st.DataObject
) -> None:
    wire_bytes = bytearray(encoded(message))
    index = data.draw(st.integers(min_value=0, max_value=len(wire_bytes) - 1))
    wire_bytes[index] = data.draw(
        st.integers(min_value=0, max_value=255).filter(lambda b: b != wire_bytes[index])
    )

    assert_only_remote_errors(outcome(reader_for(message), split(bytes(wire_bytes), data.draw)))


@given(message=messages, data=st.data())
@FUZZ
def test_message_with_reordered_tokens_is_parsed_refused_or_incomplete(
    message: Request | Reply, data: st.DataObject
) -> None:
    parts = segments(encoded(message))
    first = data.draw(st.integers(min_value=0, max_value=len(parts) - 1))
    second = data.draw(st.integers(min_value=0, max_value=len(parts) - 1))
    parts[first], parts[second] = parts[second], parts[first]

    result = outcome(reader_for(message), split(b"".join(parts), data.draw))

    assert_only_remote_errors(result)
    if parts[0][:4] not in (b"DIST", b"DONE"):
        assert isinstance(result, RemoteProtocolError)


@given(message=messages, data=st.data())
@FUZZ
def test_non_hex_digit_in_any_header_is_refused(
    message: Request | Reply, data: st.DataObject
) -> None:
    parts = segments(encoded(message))
    which = data.draw(st.integers(min_value=0, max_value=len(parts) - 1))
    digit = data.draw(st.integers(min_value=4, max_value=TOKEN_SIZE - 1))
    damaged = bytearray(parts[which])
    damaged[digit] = data.draw(st.sampled_from(_NOT_HEX))
    parts[which] = bytes(damaged)

    result = outcome(reader_for(message), split(b"".join(parts), data.draw))

    assert isinstance(result, RemoteProtocolError)
    assert "non-hex" in str(result)


_REQUEST_PREFIXES = [
    b"",
    b"DIST00000001",
    b"DIST00000002ARGC00000002ARGV00000003gcc",
    b"DIST00000001ARGC00000001ARGV00000003gccDOTI",
    b"DIST00000002ARGC00000001ARGV00000003gccDOTI00000040",
]
_REPLY_PREFIXES = [
    b"",
    b"DONE0000000",
    b"DONE00000001STAT00000000",
    b"DONE00000002STAT00000000SERR00000020",
    b"DONE00000002STAT00000000SERR00000000SOUT00000000DOTI00000040",
    b"DONE00000002STAT00000000SERR00000000SOUT00000000DOTO00000040",
]


@given(
    prefix=st.sampled_from(_REQUEST_PREFIXES),
    garbage=st.binary(max_size=300),
    data=st.data(),
)
@FUZZ
def test_garbage_request_is_refused_or_incomplete(
    prefix: bytes, garbage: bytes, data: st.DataObject
) -> None:
    result = outcome(RequestReader(FUZZ_LIMITS), split(prefix + garbage, data.draw))

    assert_only_remote_errors(result)


@given(
    protocol=protocols,
    prefix=st.sampled_from(_REPLY_PREFIXES),
    garbage=st.binary(max_size=300),
    data=st.data(),
)
@FUZZ
def test_garbage_reply_is_refused_or_incomplete(
    protocol: int, prefix: bytes, garbage: bytes, data: st.DataObject
) -> None:
    result = outcome(ReplyReader(protocol, FUZZ_LIMITS), split(prefix + garbage, data.draw))

    assert_only_remote_errors(result)
