"""The distcc request/reply codec: exact bytes, round trips, and every limit.

Limits are checked from a token header alone: a peer that claims a huge body
is refused before the parser ever asks for that body.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from wire import (
    NEED_DATA,
    LimitExceeded,
    Limits,
    LocalProtocolError,
    RemoteProtocolError,
    Reply,
    ReplyReader,
    Request,
    RequestReader,
    UnsupportedProtocol,
    encode_reply,
    encode_request,
)
from wire import lzo as wire_lzo
from wire.events import exit_status, signal_status
from wire.reader import MessageReader
from wire.tokens import TOKEN_SIZE, encode

SMALL = Limits(
    max_argc=3,
    max_arg_bytes=8,
    max_argv_total_bytes=12,
    max_source_bytes=32,
    max_object_bytes=32,
    max_output_bytes=16,
)
ARGV = ("gcc", "-O2", "-c", "hello.c", "-o", "hello.o")
SOURCE = b'# 1 "hello.c"\nint main(void) { return 0; }\n' * 20
BOTH_PROTOCOLS = pytest.mark.parametrize("protocol", [1, 2], ids=["plain", "lzo"])


def parse_whole(parser: MessageReader, data: bytes) -> object:
    parser.feed(data)
    return parser.next_event()


def parse_byte_at_a_time(parser: MessageReader, data: bytes) -> object:
    for i in range(len(data)):
        assert parser.next_event() is NEED_DATA, f"complete after only {i} bytes"
        parser.feed(data[i : i + 1])
    return parser.next_event()


def parse_as_asked(parser: MessageReader, data: bytes, asked: list[int]) -> object:
    """Feed exactly what ``parser.wanted`` asks for, recording every request."""
    position = 0
    while True:
        event = parser.next_event()
        if event is not NEED_DATA or position >= len(data):
            return event
        wanted = parser.wanted
        asked.append(wanted)
        parser.feed(data[position : position + wanted])
        position += wanted


FEEDERS: list[Callable[[MessageReader, bytes], object]] = [parse_whole, parse_byte_at_a_time]
EVERY_FEEDER = pytest.mark.parametrize("feed", FEEDERS, ids=["whole", "byte-at-a-time"])


def request_head(protocol: int, *args: bytes) -> bytes:
    """DIST, ARGC and the ARGVs of a request, as raw bytes."""
    parts = [encode(b"DIST", protocol), encode(b"ARGC", len(args))]
    for arg in args:
        parts += [encode(b"ARGV", len(arg)), arg]
    return b"".join(parts)


# --- exact bytes --------------------------------------------------------------


def test_protocol_1_request_is_tokens_then_plain_bodies() -> None:
    request = Request(protocol=1, argv=("gcc", "-c", "x.c"), source=b"int x;\n")

    assert encode_request(request) == (
        b"DIST00000001ARGC00000003ARGV00000003gccARGV00000002-cARGV00000003x.cDOTI00000007int x;\n"
    )


def test_protocol_1_reply_is_done_stat_then_three_plain_bodies() -> None:
    reply = Reply(protocol=1, status=0, stderr=b"warn\n", stdout=b"", obj=b"\x7fELF")

    assert encode_reply(reply) == (
        b"DONE00000001STAT00000000SERR00000005warn\nSOUT00000000DOTO00000004\x7fELF"
    )


def test_protocol_2_request_carries_the_source_lzo_compressed() -> None:
    data = encode_request(Request(protocol=2, argv=("gcc", "-c", "x.c"), source=SOURCE))

    head = request_head(2, b"gcc", b"-c", b"x.c")
    assert data.startswith(head)
    doti = data[len(head) :]
    assert doti[:4] == b"DOTI"
    body = doti[TOKEN_SIZE:]
    assert int(doti[4:TOKEN_SIZE], 16) == len(body) < len(SOURCE)
    assert wire_lzo.decompress(body, len(SOURCE)) == SOURCE


@pytest.mark.parametrize("protocol", [1, 2], ids=["plain", "lzo"])
def test_empty_source_is_sent_as_length_zero_even_in_protocol_2(protocol: int) -> None:
    data = encode_request(Request(protocol=protocol, argv=("gcc",), source=b""))

    assert data.endswith(b"DOTI00000000")


@BOTH_PROTOCOLS
def test_reply_with_nonzero_status_sends_doto_zero(protocol: int) -> None:
    reply = Reply(protocol=protocol, status=exit_status(1), stderr=b"error\n", stdout=b"", obj=b"X")

    data = encode_reply(reply)

    assert data.endswith(b"DOTO00000000")
    parsed = parse_whole(ReplyReader(protocol), data)
    assert isinstance(parsed, Reply)
    assert parsed.obj == b""
    assert parsed.status == 256
    assert not parsed.ok


def test_wait_status_helpers_match_distcc() -> None:
    assert exit_status(0) == 0
    assert exit_status(1) == 0x100
    assert exit_status(256 + 3) == 0x300
    assert signal_status(9) == 9


# --- round trips ----------------------------------------------------------------


@BOTH_PROTOCOLS
@EVERY_FEEDER
def test_request_round_trips(protocol: int, feed: Callable[[MessageReader, bytes], object]) -> None:
    request = Request(protocol=protocol, argv=ARGV, source=SOURCE)

    assert feed(RequestReader(), encode_request(request)) == request


@BOTH_PROTOCOLS
@EVERY_FEEDER
def test_reply_round_trips(protocol: int, feed: Callable[[MessageReader, bytes], object]) -> None:
    reply = Reply(protocol=protocol, status=0, stderr=b"w\n" * 50, stdout=b"o", obj=SOURCE)

    assert feed(ReplyReader(protocol), encode_reply(reply)) == reply


@BOTH_PROTOCOLS
def test_request_with_empty_source_round_trips(protocol: int) -> None:
    request = Request(protocol=protocol, argv=("cc",), source=b"")

    assert parse_byte_at_a_time(RequestReader(), encode_request(request)) == request


@BOTH_PROTOCOLS
def test_reply_with_all_bodies_empty_round_trips(protocol: int) -> None:
    reply = Reply(protocol=protocol, status=0, stderr=b"", stdout=b"", obj=b"")

    assert parse_byte_at_a_time(ReplyReader(protocol), encode_reply(reply)) == reply


def test_arguments_that_are_not_utf8_survive_a_round_trip() -> None:
    raw = b"-DNAME=\xff\xfe\x80"
    arg = raw.decode("utf-8", "surrogateescape")
    request = Request(protocol=1, argv=("gcc", arg), source=b"")

    data = encode_request(request)

    assert raw in data
    assert parse_whole(RequestReader(), data) == request


def test_largest_status_round_trips() -> None:
    reply = Reply(protocol=1, status=0xFFFFFFFF, stderr=b"", stdout=b"", obj=b"")

    assert parse_whole(ReplyReader(1), encode_reply(reply)) == reply


def test_parser_reports_every_consumed_byte_once_in_order() -> None:
    data = encode_request(Request(protocol=2, argv=ARGV, source=SOURCE))
    seen: list[bytes] = []
    parser = RequestReader()
    parser.on_bytes = seen.append

    parse_byte_at_a_time(parser, data)

    assert b"".join(seen) == data
    assert parser.consumed == len(data)


def test_finished_parser_wants_nothing_more() -> None:
    parser = RequestReader()
    event = parse_whole(parser, encode_request(Request(protocol=1, argv=ARGV, source=b"x")))

    assert isinstance(event, Request)
    assert parser.wanted == 0
    assert parser.buffered == 0


def test_bytes_after_a_whole_message_are_kept_as_trailing() -> None:
    first = encode_request(Request(protocol=1, argv=("gcc",), source=b"one"))
    second = encode_request(Request(protocol=1, argv=("gcc",), source=b"two"))
    parser = RequestReader()

    event = parse_whole(parser, first + second)

    assert event == Request(protocol=1, argv=("gcc",), source=b"one")
    assert parser.trailing == second
    assert parser.consumed == len(first)
    assert parser.next_event() == event


def test_unfinished_parser_reports_no_trailing_bytes() -> None:
    parser = RequestReader()
    parser.feed(b"DIST00000001ARGC")

    assert parser.next_event() is NEED_DATA
    assert parser.trailing == b""
    assert parser.buffered == 4
    assert parser.wanted == TOKEN_SIZE - 4


# --- what the peer may not send ---------------------------------------------------


@pytest.mark.parametrize("protocol", [1, 2], ids=["plain", "lzo"])
def test_claimed_huge_doti_is_refused_before_reading(protocol: int) -> None:
    hostile = request_head(protocol, b"gcc", b"-c", b"x.c") + b"DOTIffffffff"
    parser = RequestReader()
    asked: list[int] = []

    with pytest.raises(LimitExceeded) as refused:
        parse_as_asked(parser, hostile, asked)

    assert refused.value.field == "DOTI"
    assert refused.value.claimed == 0xFFFFFFFF
    assert max(asked) <= TOKEN_SIZE, f"parser asked for {max(asked)} bytes"
    assert parser.consumed == len(hostile)
    assert parser.buffered == 0


def test_claimed_huge_doti_is_refused_as_its_header_completes() -> None:
    hostile = request_head(1, b"gcc") + b"DOTIffffffff"
    parser = RequestReader()
    for byte in hostile[:-1]:
        parser.feed(bytes([byte]))
        assert parser.next_event() is NEED_DATA

    parser.feed(hostile[-1:])
    with pytest.raises(LimitExceeded):
        parser.next_event()


def test_argc_above_limit_is_refused_before_any_argument() -> None:
    asked: list[int] = []
    with pytest.raises(LimitExceeded) as refused:
        parse_as_asked(RequestReader(SMALL), b"DIST00000001ARGC00000004", asked)

    assert (refused.value.field, refused.value.claimed, refused.value.limit) == ("ARGC", 4, 3)
    assert asked == [TOKEN_SIZE, TOKEN_SIZE]


def test_argc_at_limit_is_accepted() -> None:
    request = Request(protocol=1, argv=("a", "b", "c"), source=b"")

    assert parse_whole(RequestReader(SMALL), encode_request(request)) == request


def test_argument_above_limit_is_refused_before_reading_it() -> None:
    asked: list[int] = []
    with pytest.raises(LimitExceeded) as refused:
        parse_as_asked(RequestReader(SMALL), request_head(1, b"123456789"), asked)

    assert (refused.value.field, refused.value.claimed, refused.value.limit) == ("ARGV", 9, 8)
    assert max(asked) == TOKEN_SIZE


def test_argument_at_limit_is_accepted() -> None:
    request = Request(protocol=1, argv=("12345678",), source=b"")

    assert parse_whole(RequestReader(SMALL), encode_request(request)) == request


def test_arguments_above_total_limit_are_refused_before_the_last_is_read() -> None:
    data = request_head(1, b"a" * 8, b"b" * 5)
    asked: list[int] = []

    with pytest.raises(LimitExceeded) as refused:
        parse_as_asked(RequestReader(SMALL), data, asked)

    assert (refused.value.field, refused.value.claimed, refused.value.limit) == (
        "ARGV total",
        13,
        12,
    )
    assert 5 not in asked


def test_arguments_at_total_limit_are_accepted() -> None:
    request = Request(protocol=1, argv=("a" * 8, "b" * 4), source=b"")

    assert parse_whole(RequestReader(SMALL), encode_request(request)) == request


def test_plain_source_above_limit_is_refused_before_reading_it() -> None:
    asked: list[int] = []
    with pytest.raises(LimitExceeded) as refused:
        parse_as_asked(RequestReader(SMALL), request_head(1, b"gcc") + b"DOTI00000021", asked)

    assert (refused.value.field, refused.value.claimed, refused.value.limit) == ("DOTI", 33, 32)
    assert 33 not in asked


def test_plain_source_at_limit_is_accepted() -> None:
    request = Request(protocol=1, argv=("gcc",), source=b"s" * 32)

    assert parse_whole(RequestReader(SMALL), encode_request(request)) == request


def test_compressed_source_longer_than_lzo_worst_case_is_refused_before_reading_it() -> None:
    # distcc sizes LZO buffers as plain + plain/16 + 64 + 3: 32 + 2 + 67 = 101.
    hostile = request_head(2, b"gcc") + encode(b"DOTI", 102)
    asked: list[int] = []

    with pytest.raises(LimitExceeded) as refused:
        parse_as_asked(RequestReader(SMALL), hostile, asked)

    assert (refused.value.field, refused.value.claimed, refused.value.limit) == ("DOTI", 102, 101)
    assert 102 not in asked


def test_compressed_source_that_inflates_past_limit_is_refused() -> None:
    data = encode_request(Request(protocol=2, argv=("gcc",), source=b"\0" * 33))

    with pytest.raises(LimitExceeded) as refused:
        parse_whole(RequestReader(SMALL), data)

    assert refused.value.field == "DOTI (decompressed)"
    assert refused.value.limit == 32


def test_compressed_source_that_inflates_to_exactly_the_limit_is_accepted() -> None:
    request = Request(protocol=2, argv=("gcc",), source=b"\0" * 32)

    assert parse_whole(RequestReader(SMALL), encode_request(request)) == request


def test_corrupt_compressed_source_is_a_remote_protocol_error() -> None:
    hostile = request_head(2, b"gcc") + encode(b"DOTI", 8) + b"\xff" * 8

    with pytest.raises(RemoteProtocolError, match="DOTI"):
        parse_whole(RequestReader(SMALL), hostile)


@BOTH_PROTOCOLS
@pytest.mark.parametrize(
    ("field", "bodies"),
    [
        ("SERR", {"stderr": b"e" * 17, "stdout": b"", "obj": b""}),
        ("SOUT", {"stderr": b"", "stdout": b"o" * 17, "obj": b""}),
        ("DOTO", {"stderr": b"", "stdout": b"", "obj": b"\0" * 33}),
    ],
    ids=["stderr", "stdout", "object"],
)
def test_reply_body_above_limit_is_refused(
    protocol: int, field: str, bodies: dict[str, bytes]
) -> None:
    data = encode_reply(Reply(protocol=protocol, status=0, **bodies))
    asked: list[int] = []

    with pytest.raises(LimitExceeded) as refused:
        parse_as_asked(ReplyReader(protocol, SMALL), data, asked)

    assert refused.value.field.startswith(field)
    if protocol == 1:
        # Plain bodies are refused from the header; the body is never asked for.
        assert max(asked) == TOKEN_SIZE


@BOTH_PROTOCOLS
def test_reply_bodies_at_their_limits_are_accepted(protocol: int) -> None:
    reply = Reply(protocol=protocol, status=0, stderr=b"e" * 16, stdout=b"o" * 16, obj=b"\0" * 32)

    assert parse_whole(ReplyReader(protocol, SMALL), encode_reply(reply)) == reply


def test_compressed_object_longer_than_lzo_worst_case_is_refused_before_reading_it() -> None:
    hostile = (
        b"DONE00000002STAT00000000SERR00000000SOUT00000000" + encode(b"DOTO", 102) + b"\0" * 102
    )
    asked: list[int] = []

    with pytest.raises(LimitExceeded) as refused:
        parse_as_asked(ReplyReader(2, SMALL), hostile, asked)

    assert (refused.value.field, refused.value.claimed, refused.value.limit) == ("DOTO", 102, 101)
    assert max(asked) == TOKEN_SIZE


@pytest.mark.parametrize("version", [0, 4, 0xFFFFFFFF])
def test_unknown_protocol_versions_are_refused_as_unsupported(version: int) -> None:
    parser = RequestReader()
    parser.feed(encode(b"DIST", version))

    with pytest.raises(UnsupportedProtocol) as refused:
        parser.next_event()

    assert refused.value.version == version


def test_argument_with_nul_byte_is_refused() -> None:
    data = request_head(1, b"gcc", b"-D\0X") + b"DOTI00000000"

    with pytest.raises(RemoteProtocolError, match="NUL") as refused:
        parse_whole(RequestReader(), data)

    assert not isinstance(refused.value, LimitExceeded)


def test_request_without_arguments_is_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="ARGC is 0"):
        parse_whole(RequestReader(), b"DIST00000001ARGC00000000DOTI00000000")


def test_tokens_out_of_order_are_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="expected token ARGC"):
        parse_whole(RequestReader(), b"DIST00000001ARGV00000003gcc")


def test_non_hex_length_is_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="non-hex"):
        parse_whole(RequestReader(), b"DIST00000001ARGC0000000z")


def test_reply_in_another_protocol_than_the_request_is_refused() -> None:
    data = encode_reply(Reply(protocol=2, status=0, stderr=b"", stdout=b"", obj=b""))

    with pytest.raises(RemoteProtocolError, match="protocol 2"):
        parse_whole(ReplyReader(1), data)


def test_reply_that_does_not_start_with_done_is_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="expected token DONE"):
        parse_whole(ReplyReader(1), b"STAT00000000")


def test_parser_that_refused_keeps_refusing() -> None:
    parser = RequestReader()
    parser.feed(b"XXXX00000001" + b"DIST00000001" * 2)
    with pytest.raises(RemoteProtocolError):
        parser.next_event()

    with pytest.raises(RemoteProtocolError):
        parser.next_event()


# --- what we refuse to send -------------------------------------------------------


@pytest.mark.parametrize("protocol", [0, 3, 4])
def test_request_in_an_unserved_protocol_cannot_be_encoded(protocol: int) -> None:
    with pytest.raises(LocalProtocolError, match="protocol"):
        encode_request(Request(protocol=protocol, argv=("gcc",), source=b""))


@pytest.mark.parametrize("protocol", [0, 4])
def test_reply_in_an_unserved_protocol_cannot_be_encoded(protocol: int) -> None:
    with pytest.raises(LocalProtocolError, match="protocol"):
        encode_reply(Reply(protocol=protocol, status=0, stderr=b"", stdout=b"", obj=b""))


def test_request_without_arguments_cannot_be_encoded() -> None:
    with pytest.raises(LocalProtocolError):
        encode_request(Request(protocol=1, argv=(), source=b""))


def test_argument_with_nul_cannot_be_encoded() -> None:
    with pytest.raises(LocalProtocolError, match="NUL"):
        encode_request(Request(protocol=1, argv=("gcc", "-DX=\0"), source=b""))


@pytest.mark.parametrize("status", [-1, 2**32])
def test_status_outside_32_bits_cannot_be_encoded(status: int) -> None:
    with pytest.raises(LocalProtocolError, match="32 bits"):
        encode_reply(Reply(protocol=1, status=status, stderr=b"", stdout=b"", obj=b""))


def test_argument_that_cannot_be_encoded_as_bytes_is_a_local_protocol_error() -> None:
    with pytest.raises(LocalProtocolError):
        encode_request(Request(protocol=1, argv=("gcc", "\ud800"), source=b""))


def test_a_reader_bounds_its_own_buffer_whoever_feeds_it() -> None:
    """Feeding more than any message the limits allow is refused by the parser itself
    (not only by the asyncio adapter, which never reads more than it was asked for)."""
    from wire.errors import LimitExceeded
    from wire.reader import ReplyReader, RequestReader

    limits = Limits(max_argc=4, max_argv_total_bytes=100, max_source_bytes=1000)
    reader = RequestReader(limits)
    whole = encode_request(Request(1, ("gcc", "-c", "a.c"), b"x" * 1000))
    reader.feed(whole)  # a whole message at once is fine
    assert isinstance(reader.next_event(), Request)
    flood = RequestReader(limits)
    with pytest.raises(LimitExceeded, match="bytes buffered"):
        flood.feed(b"DIST00000001" + b"\0" * flood.max_buffer)
    with pytest.raises(LimitExceeded):
        flood.next_event()  # a reader that refused stays refused
    replies = ReplyReader(1, Limits(max_object_bytes=10, max_output_bytes=10))
    with pytest.raises(LimitExceeded):
        replies.feed(b"\0" * (replies.max_buffer + 1))
