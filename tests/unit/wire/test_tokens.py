"""distcc token headers: 4 ASCII letters then 8 hex digits, nothing else."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wire import LocalProtocolError, RemoteProtocolError
from wire.tokens import MAX_VALUE, TOKEN_SIZE, decode, encode

PROPERTY = settings(max_examples=200, deadline=None, database=None)


def test_header_is_name_then_eight_lowercase_hex_digits() -> None:
    assert encode(b"DIST", 1) == b"DIST00000001"
    assert encode(b"ARGV", 0xABCDEF) == b"ARGV00abcdef"
    assert len(encode(b"DOTI", MAX_VALUE)) == TOKEN_SIZE == 12


def test_largest_32_bit_value_is_encodable() -> None:
    assert encode(b"STAT", 0xFFFFFFFF) == b"STATffffffff"


@given(value=st.integers(min_value=0, max_value=MAX_VALUE))
@PROPERTY
def test_every_32_bit_value_round_trips(value: int) -> None:
    assert decode(encode(b"DOTO", value), b"DOTO") == value


def test_decoder_accepts_upper_and_lower_case_hex() -> None:
    assert decode(b"ARGC0000FFFF", b"ARGC") == 0xFFFF
    assert decode(b"ARGC0000ffff", b"ARGC") == 0xFFFF
    assert decode(b"ARGC0000fFfF", b"ARGC") == 0xFFFF


def test_decoder_refuses_a_header_with_another_name() -> None:
    with pytest.raises(RemoteProtocolError, match="expected token ARGC"):
        decode(b"ARGV00000001", b"ARGC")


def test_decoder_refuses_a_lowercase_spelling_of_the_expected_name() -> None:
    with pytest.raises(RemoteProtocolError):
        decode(b"dist00000001", b"DIST")


@pytest.mark.parametrize(
    "digits",
    [b"0000000g", b" 0000001", b"+0000001", b"-0000001", b"0000_001", b"0x000001", b"\x000000001"],
    ids=["letter-g", "space", "plus", "minus", "underscore", "0x-prefix", "nul"],
)
def test_decoder_refuses_anything_but_hex_digits(digits: bytes) -> None:
    header = b"DOTI" + digits[:8]
    assert len(header) == TOKEN_SIZE
    with pytest.raises(RemoteProtocolError, match="non-hex"):
        decode(header, b"DOTI")


@pytest.mark.parametrize("header", [b"", b"DIST", b"DIST0000001", b"DIST000000001"])
def test_decoder_refuses_a_header_that_is_not_twelve_bytes(header: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="12 bytes"):
        decode(header, b"DIST")


@pytest.mark.parametrize("name", [b"DIS", b"DISTX", b"", b"DIS1", b"DI T", b"D\xc9ST"])
def test_encoder_refuses_a_name_that_is_not_four_ascii_letters(name: bytes) -> None:
    with pytest.raises(LocalProtocolError, match="4 ASCII letters"):
        encode(name, 1)


@pytest.mark.parametrize("value", [-1, MAX_VALUE + 1, 2**64])
def test_encoder_refuses_a_value_outside_32_bits(value: int) -> None:
    with pytest.raises(LocalProtocolError, match="32 bits"):
        encode(b"STAT", value)


@given(header=st.binary(min_size=TOKEN_SIZE, max_size=TOKEN_SIZE))
@PROPERTY
def test_any_twelve_bytes_decode_to_a_value_or_a_remote_protocol_error(header: bytes) -> None:
    try:
        value = decode(header, b"DIST")
    except RemoteProtocolError:
        return
    assert header[:4] == b"DIST"
    assert 0 <= value <= MAX_VALUE
