"""LZO1X-1 as distcc speaks it: raw streams, bounded decompression, empty bodies uncompressed."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.budgets import ON_LOOP_INFLATE_BYTES, Held, InflateBudget
from wire import (
    CompressionError,
    LimitExceeded,
    Limits,
    RemoteProtocolError,
    Reply,
    ReplyReader,
    Request,
    RequestReader,
    encode_reply,
    encode_request,
)
from wire.events import CompressedReply
from wire.lzo import compress, decompress, decompress_within
from wire.stream import inflate_reply

MiB = 1024 * 1024
TEXT = b"static inline int square(int x) { return x * x; }\n" * 200


def test_compressed_text_round_trips_and_is_smaller() -> None:
    packed = compress(TEXT)

    assert len(packed) < len(TEXT)
    assert decompress(packed, len(TEXT)) == TEXT


def test_stream_is_raw_lzo1x_without_a_header() -> None:
    # One literal run (17 + length), then LZO1X's end-of-stream marker: what minilzo writes.
    assert compress(b"hello") == b"\x16hello\x11\x00\x00"


@given(data=st.binary(min_size=1, max_size=4096))
@settings(max_examples=100, deadline=None, database=None)
def test_any_bytes_round_trip(data: bytes) -> None:
    assert decompress(compress(data), len(data)) == data


def test_output_larger_than_the_first_buffer_guess_still_decompresses() -> None:
    # A 1 MiB run of zeros packs to a few KiB; the buffer has to grow several times.
    zeros = b"\0" * MiB
    packed = compress(zeros)
    assert len(packed) * 8 < len(zeros)

    assert decompress(packed, 2 * MiB) == zeros


def test_output_of_exactly_max_size_is_accepted() -> None:
    assert decompress(compress(TEXT), len(TEXT)) == TEXT


def test_output_over_max_size_is_limit_exceeded() -> None:
    with pytest.raises(LimitExceeded) as refused:
        decompress(compress(TEXT), len(TEXT) - 1, field="DOTI")

    assert refused.value.field == "DOTI (decompressed)"
    assert refused.value.limit == len(TEXT) - 1
    assert refused.value.claimed > refused.value.limit


def test_decompression_bomb_is_stopped_at_max_size() -> None:
    bomb = compress(b"\0" * (4 * MiB))

    with pytest.raises(LimitExceeded):
        decompress(bomb, 64 * 1024)


@pytest.mark.parametrize(
    "corrupt",
    [
        b"\xff" * 32,
        b"garbage, not lzo at all",
        compress(TEXT)[:-3],
        compress(TEXT) + b"\x00\x01",
        b"",
    ],
    ids=["all-ones", "text", "truncated", "trailing-bytes", "empty"],
)
def test_corrupt_stream_is_compression_error(corrupt: bytes) -> None:
    with pytest.raises(CompressionError, match="SERR"):
        decompress(corrupt, MiB, field="SERR")


def test_compression_error_is_the_peers_fault() -> None:
    assert issubclass(CompressionError, RemoteProtocolError)
    assert issubclass(LimitExceeded, RemoteProtocolError)


def test_empty_source_is_sent_with_length_zero_and_no_lzo_stream() -> None:
    data = encode_request(Request(protocol=2, argv=("gcc", "-c", "x.c"), source=b""))

    # compress(b"") would be the 3-byte end marker; distcc sends nothing at all.
    assert data.endswith(b"DOTI00000000")


def test_empty_reply_bodies_are_sent_with_length_zero() -> None:
    data = encode_reply(Reply(protocol=2, status=0, stderr=b"", stdout=b"", obj=b""))

    assert data == b"DONE00000002STAT00000000SERR00000000SOUT00000000DOTO00000000"


def test_length_zero_body_in_protocol_2_reads_as_empty() -> None:
    parser = RequestReader()
    parser.feed(b"DIST00000002ARGC00000001ARGV00000003gccDOTI00000000")

    assert parser.next_event() == Request(protocol=2, argv=("gcc",), source=b"")


def test_explicit_empty_lzo_stream_also_reads_as_empty() -> None:
    parser = ReplyReader(2)
    end_marker = b"\x11\x00\x00"
    parser.feed(b"DONE00000002STAT00000000SERR00000003" + end_marker + b"SOUT00000000DOTO00000000")

    event = parser.next_event()

    assert isinstance(event, Reply)
    assert event.stderr == b""


def test_decompress_within_one_buffer_returns_none_past_it() -> None:
    assert decompress_within(compress(TEXT), len(TEXT)) == TEXT
    assert decompress_within(compress(TEXT), len(TEXT) - 1) is None
    with pytest.raises(CompressionError, match="DOTI"):
        decompress_within(b"\xff" * 32, MiB, "DOTI")


@pytest.mark.parametrize(
    "source",
    [TEXT, b"x" * (ON_LOOP_INFLATE_BYTES + 1), b"\0" * (8 * MiB)],
    ids=["small: on the loop", "just past the cap: in a thread", "a bomb: in a thread"],
)
def test_the_inflate_budget_gives_the_same_source_on_the_loop_or_in_a_thread(
    source: bytes,
) -> None:
    budget = InflateBudget(64 * MiB)
    assert asyncio.run(budget.inflate(compress(source), 16 * MiB)) == source
    assert budget.in_use == 0


def test_the_inflate_budget_refuses_past_the_source_limit_either_way() -> None:
    budget = InflateBudget(64 * MiB)
    for size in (ON_LOOP_INFLATE_BYTES // 2, 4 * MiB):
        with pytest.raises(LimitExceeded):
            asyncio.run(budget.inflate(compress(b"\0" * size), size - 1))


@pytest.mark.parametrize(
    "obj", [TEXT, b"\0" * (8 * MiB)], ids=["small: on the loop", "a bomb: in a thread"]
)
def test_a_deferred_reply_inflates_to_the_reply_and_within_its_limits(obj: bytes) -> None:
    reply = Reply(2, 0, b"warning: x\n", b"", obj)
    parser = ReplyReader(2, defer_decompression=True)
    parser.feed(encode_reply(reply))
    compressed = parser.next_event()
    assert isinstance(compressed, CompressedReply) and compressed.obj == compress(obj)
    assert asyncio.run(inflate_reply(compressed)) == reply
    with pytest.raises(LimitExceeded):
        asyncio.run(inflate_reply(compressed, Limits(max_object_bytes=len(obj) - 1)))


def test_the_inflate_budget_keeps_a_source_counted_for_its_holder() -> None:
    budget = InflateBudget(64 * MiB)
    held = Held()
    source = b"\0" * (4 * MiB)
    assert asyncio.run(budget.inflate(compress(source), 16 * MiB, held)) == source
    assert budget.in_use == held.of(budget) == len(source)
    held.release()
    assert budget.in_use == 0
