"""Writes that need no drain (wire/stream.py ``sent_already``, ``drain_within``): a small
message that went to the kernel at once needs no timer; one still buffered, or written
to a transport that is closing, is drained (within the bound, or the error is raised),
never taken as sent."""

from __future__ import annotations

import asyncio
import socket

import pytest

from wire.stream import drain_within, sent_already

pytestmark = pytest.mark.asyncio


async def _pair() -> tuple[asyncio.StreamWriter, socket.socket]:
    ours, theirs = socket.socketpair()
    _, writer = await asyncio.open_connection(sock=ours)
    return writer, theirs


async def test_a_small_write_is_sent_at_once_and_drained_without_waiting() -> None:
    writer, theirs = await _pair()
    try:
        writer.write(b"x" * 100)
        assert sent_already(writer)
        await drain_within(writer, 0.0)
        assert theirs.recv(200) == b"x" * 100
    finally:
        writer.close()
        theirs.close()


async def test_a_write_the_peer_does_not_take_is_bounded() -> None:
    writer, theirs = await _pair()
    try:
        writer.write(b"x" * (64 << 20))  # (more than the socket buffers: the rest waits)
        assert not sent_already(writer)
        with pytest.raises(TimeoutError):
            await drain_within(writer, 0.05)
    finally:
        writer.transport.abort()
        theirs.close()


async def test_a_closing_transport_is_never_taken_as_sent() -> None:
    writer, theirs = await _pair()
    try:
        writer.close()
        assert not sent_already(writer)
    finally:
        theirs.close()
