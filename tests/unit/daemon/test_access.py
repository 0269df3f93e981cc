"""Client access: an address is allowed when it falls in one of the --allow networks."""

from __future__ import annotations

import ipaddress

import pytest

from daemon.access import is_allowed

LAN = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.0/8")]
V6 = [ipaddress.ip_network("2001:db8::/32"), ipaddress.ip_network("::1/128")]
BOTH = LAN + V6


@pytest.mark.parametrize("address", ["10.0.0.1", "10.255.255.255", "127.0.0.1", "127.9.9.9"])
def test_ipv4_inside_an_allowed_network_is_allowed(address: str) -> None:
    assert is_allowed(address, LAN)


@pytest.mark.parametrize("address", ["11.0.0.1", "192.168.1.1", "9.255.255.255", "0.0.0.0"])
def test_ipv4_outside_every_allowed_network_is_refused(address: str) -> None:
    assert not is_allowed(address, LAN)


@pytest.mark.parametrize("address", ["2001:db8::1", "2001:db8:ffff::42", "::1"])
def test_ipv6_inside_an_allowed_network_is_allowed(address: str) -> None:
    assert is_allowed(address, V6)


@pytest.mark.parametrize("address", ["2001:db9::1", "fe80::1", "::2"])
def test_ipv6_outside_every_allowed_network_is_refused(address: str) -> None:
    assert not is_allowed(address, V6)


def test_ipv4_mapped_ipv6_client_is_judged_by_its_ipv4_address() -> None:
    assert is_allowed("::ffff:10.1.2.3", LAN)
    assert is_allowed("::ffff:127.0.0.1", LAN)
    assert not is_allowed("::ffff:192.168.0.1", LAN)


def test_ipv4_compatible_address_is_not_treated_as_ipv4() -> None:
    # ::10.1.2.3 is a (deprecated) IPv6 address, not a mapped IPv4 one.
    assert not is_allowed("::10.1.2.3", LAN)


def test_scoped_ipv6_address_is_judged_without_its_zone() -> None:
    link_local = [ipaddress.ip_network("fe80::/10")]

    assert is_allowed("fe80::1%eth0", link_local)
    assert not is_allowed("fe80::1%eth0", V6)


def test_ipv4_client_never_matches_an_ipv6_network() -> None:
    assert not is_allowed("10.0.0.1", [ipaddress.ip_network("::/0")])


def test_ipv6_client_never_matches_an_ipv4_network() -> None:
    assert not is_allowed("2001:db8::1", [ipaddress.ip_network("0.0.0.0/0")])


@pytest.mark.parametrize(
    "address",
    ["", "?", "localhost", "10.0.0", "10.0.0.256", "10.0.0.1/8", "::g", " 10.0.0.1", "10.0.0.1\n"],
)
def test_garbage_address_is_refused_not_raised(address: str) -> None:
    assert not is_allowed(address, BOTH)


def test_empty_allow_list_refuses_everyone() -> None:
    assert not is_allowed("127.0.0.1", [])
    assert not is_allowed("::1", [])


def test_v4_mapped_client_matches_an_allowed_v4_mapped_network() -> None:
    assert is_allowed("::ffff:10.1.2.3", [ipaddress.ip_network("::ffff:10.0.0.0/104")])
