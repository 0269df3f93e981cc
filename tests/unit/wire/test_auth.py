"""The GSSAPI handshake's framing (wire/auth.py): markers, verdicts, TLEN tokens."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wire import NEED_DATA, LimitExceeded, LocalProtocolError, RemoteProtocolError
from wire.auth import (
    ACCESS_DENIED,
    ACCESS_GRANTED,
    HANDSHAKE,
    AccessDenied,
    AuthProtocolError,
    NotAuthenticating,
    TokenReader,
    check_handshake,
    check_verdict,
    encode_token,
    verdict,
)
from wire.errors import ConnectionClosed
from wire.stream import read_auth_token, read_byte

FUZZ = settings(max_examples=300, deadline=None, database=None)


def test_markers_are_distccs_bytes() -> None:
    assert (HANDSHAKE, ACCESS_GRANTED, ACCESS_DENIED) == (b"*", b"y", b"n")
    assert verdict(True) == b"y" and verdict(False) == b"n"


def test_a_client_without_auth_is_recognised_by_its_first_byte() -> None:
    check_handshake(b"*")
    with pytest.raises(NotAuthenticating) as caught:
        check_handshake(b"D")  # the first byte of DIST
    assert caught.value.received == b"D"
    assert isinstance(caught.value, RemoteProtocolError)


def test_verdicts() -> None:
    check_verdict(b"y")
    with pytest.raises(AccessDenied):
        check_verdict(b"n")
    with pytest.raises(AuthProtocolError):
        check_verdict(b"Y")


def test_token_is_framed_as_tlen_and_bytes() -> None:
    assert encode_token(b"abc") == b"TLEN00000003abc"


def test_empty_or_oversized_tokens_are_never_sent() -> None:
    with pytest.raises(LocalProtocolError):
        encode_token(b"")
    with pytest.raises(LocalProtocolError):
        encode_token(b"x" * 11, max_bytes=10)


def test_huge_length_claim_is_refused_from_the_header_alone() -> None:
    reader = TokenReader(max_bytes=1024)
    reader.feed(b"TLENffffffff")
    with pytest.raises(LimitExceeded) as caught:
        reader.next_event()
    assert caught.value.claimed == 0xFFFFFFFF and caught.value.limit == 1024
    assert reader.wanted == 0 or reader.buffered == 0


def test_zero_length_token_is_refused() -> None:
    reader = TokenReader()
    reader.feed(b"TLEN00000000")
    with pytest.raises(AuthProtocolError):
        reader.next_event()


def test_wrong_token_name_is_refused() -> None:
    reader = TokenReader()
    reader.feed(b"DIST00000001")
    with pytest.raises(RemoteProtocolError):
        reader.next_event()


def test_reader_asks_for_exactly_the_bytes_it_needs() -> None:
    reader = TokenReader()
    assert reader.wanted == 12
    reader.feed(b"TLEN00000005")
    assert reader.next_event() is NEED_DATA
    assert reader.wanted == 5
    reader.feed(b"hello")
    assert reader.next_event() == b"hello"


@given(token=st.binary(min_size=1, max_size=4096), cuts=st.lists(st.integers(0, 4200)))
@FUZZ
def test_any_token_round_trips_however_split(token: bytes, cuts: list[int]) -> None:
    data = encode_token(token)
    reader = TokenReader()
    last = 0
    for cut in sorted(c for c in cuts if c <= len(data)):
        reader.feed(data[last:cut])
        last = cut
        result = reader.next_event()
        assert result is NEED_DATA or (result == token and cut == len(data))
    reader.feed(data[last:])
    assert reader.next_event() == token


@given(garbage=st.binary(max_size=200))
@FUZZ
def test_garbage_yields_a_token_need_data_or_a_remote_error(garbage: bytes) -> None:
    reader = TokenReader(max_bytes=64)
    reader.feed(garbage)
    try:
        result = reader.next_event()
    except RemoteProtocolError:
        return
    assert result is NEED_DATA or (isinstance(result, bytes) and 0 < len(result) <= 64)


@given(length=st.integers(65, 0xFFFFFFFF))
@FUZZ
def test_every_claim_over_the_limit_is_refused(length: int) -> None:
    reader = TokenReader(max_bytes=64)
    reader.feed(b"TLEN%08x" % length)
    with pytest.raises(LimitExceeded):
        reader.next_event()


def _stream(data: bytes, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


@pytest.mark.asyncio
async def test_stream_reads_one_token_and_leaves_the_rest() -> None:
    reader = _stream(encode_token(b"tok") + b"DIST00000001")
    assert await read_auth_token(reader) == b"tok"
    assert await reader.read(4) == b"DIST"


@pytest.mark.asyncio
async def test_stream_truncated_token_is_connection_closed() -> None:
    with pytest.raises(ConnectionClosed):
        await read_auth_token(_stream(b"TLEN00000010abc"))


@pytest.mark.asyncio
async def test_stream_silence_times_out() -> None:
    with pytest.raises(TimeoutError):
        await read_byte(_stream(b"", eof=False), "the handshake", idle_timeout_s=0.05)
    with pytest.raises(ConnectionClosed):
        await read_byte(_stream(b""), "the handshake", idle_timeout_s=1)
