"""Handshake places of the GSSAPI acceptor: each address has its share, and an IPv6 /64
(which one host may hold whole) at most half of all places, so neither one host
spreading over its /64 (a review) nor one host on a LAN that is one /64 (another
review) takes every place."""

from __future__ import annotations

import asyncio

import pytest

from client.gss import AuthError
from daemon.gss import Acceptor


def test_one_ipv6_64_holds_at_most_half_the_handshake_places() -> None:
    async def scenario() -> None:
        acceptor = Acceptor(max_handshakes=64, max_per_address=8)
        deadline = asyncio.get_running_loop().time() + 0.2
        for i in range(32):  # (one host spread over its /64: a place per address)
            await acceptor._take_place(f"2001:db8::{i + 1:x}", deadline)
        with pytest.raises(AuthError, match="from 2001:db8::/64"):
            await acceptor._take_place("2001:db8::ffff", deadline)
        await acceptor._take_place("2001:db8:1::1", deadline)  # another /64: at once
        await acceptor._take_place("192.0.2.1", deadline)
        assert acceptor.in_progress == 34
        acceptor._give_back("2001:db8::3")  # (the /64 has room again)
        await acceptor._take_place("2001:db8::ffff", deadline)
        assert acceptor.in_progress == 34

    asyncio.run(scenario())


def test_one_address_of_a_shared_64_takes_only_its_share() -> None:
    async def scenario() -> None:
        acceptor = Acceptor(max_handshakes=64, max_per_address=8)
        deadline = asyncio.get_running_loop().time() + 0.2
        for _ in range(8):
            await acceptor._take_place("2001:db8::bad", deadline)
        with pytest.raises(AuthError):  # (waits for one of its own, which never ends)
            await acceptor._take_place("2001:db8::bad", deadline)
        for i in range(8):  # the other hosts of its LAN still log in
            await acceptor._take_place(f"2001:db8::{i + 1:x}", deadline)
        assert acceptor.in_progress == 16

    asyncio.run(scenario())
