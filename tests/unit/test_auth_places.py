"""Handshake places of the GSSAPI acceptor: counted per host, an IPv6 /64 being one, as
the connection caps count it (a review took every place from one /64)."""

from __future__ import annotations

import asyncio

import pytest

from client.gss import AuthError
from daemon.gss import Acceptor


def test_one_ipv6_64_holds_no_more_handshake_places_than_one_address() -> None:
    async def scenario() -> None:
        acceptor = Acceptor(max_handshakes=64, max_per_address=8)
        deadline = asyncio.get_running_loop().time() + 0.2
        for i in range(8):
            await acceptor._take_place(f"2001:db8::{i + 1:x}", deadline)
        with pytest.raises(AuthError):  # (waits for one of its own, which never ends)
            await acceptor._take_place("2001:db8::ffff", deadline)
        await acceptor._take_place("2001:db8:1::1", deadline)  # another host: at once
        await acceptor._take_place("192.0.2.1", deadline)
        assert acceptor.in_progress == 10
        acceptor._give_back("2001:db8::3")  # (a place of the /64's own, given back)
        assert acceptor.in_progress == 9

    asyncio.run(scenario())
