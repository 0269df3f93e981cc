"""Address allowlists, shared by the server and the balancer."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def is_allowed(address: str, allow: Sequence[Network]) -> bool:
    """True when ``address`` falls in one of the ``allow`` networks (v4-mapped v6 too)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    # A v4-mapped v6 address matches its IPv4 networks as well as v6 ones.
    forms: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        forms.append(ip.ipv4_mapped)
    return any(form in network for form in forms for network in allow)


def parse_networks(cidrs: Sequence[str]) -> list[Network]:
    """``--allow`` values as networks (host bits allowed); ValueError names the bad one."""
    return [ipaddress.ip_network(cidr, strict=False) for cidr in cidrs]
