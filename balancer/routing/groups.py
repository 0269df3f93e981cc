"""Who shares with whom (``--fair-groups FILE``): clients named into groups, each group
one share of the farm with a weight; every other client is a share of its own, of
weight 1 (balancer/routing/fair.py).

The file is TOML. A group is a list of members (principals, realm included, as
``--allow-principals`` writes them; or addresses and CIDRs), or a table with
``members`` and ``weight``::

    people = ["alice@EXAMPLE.COM", "10.0.4.0/24"]

    [ci]
    members = ["ci-runner@EXAMPLE.COM", "10.0.9.0/24"]
    weight = 0.25          # when the farm is full, ci gets a quarter of a person's share

A client is in the group that names its principal (when it authenticated), else the
group with the longest prefix holding its address. The file is looked at (one
``stat``) at most once a second and read again when it changed; a file that cannot be
read or parsed keeps the groups last read (logged), and fails the start.
"""

from __future__ import annotations

import ipaddress
import os
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger("distlb.balancer.groups")

MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_NAME_CHARS = 100
CHECK_INTERVAL_S = 1.0

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class GroupsError(ValueError):
    """The groups file cannot be read or says something that is not a group."""


@dataclass(frozen=True)
class Who:
    """A job's share of the farm: its name (a group's, a principal, an address) and weight."""

    name: str
    weight: float = 1.0


@dataclass(frozen=True)
class Groups:
    principals: dict[str, str] = field(default_factory=dict)
    """Principal -> group."""
    networks: dict[tuple[int, int], dict[int, str]] = field(default_factory=dict)
    """(IP version, prefix length) -> the networks' first addresses -> group, longest
    prefix first (an address is looked up once per prefix length, not per network)."""
    weights: dict[str, float] = field(default_factory=dict)

    def who(self, address: str, principal: str | None) -> Who:
        """The share of a client at ``address`` (authenticated as ``principal``)."""
        if principal:
            group = self.principals.get(principal)
            if group is not None:
                return Who(group, self.weights[group])
        if self.networks:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                ip = None
            if ip is not None:
                if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                    ip = ip.ipv4_mapped
                bits = ip.max_prefixlen
                for (version, length), firsts in self.networks.items():
                    if version == ip.version:
                        group = firsts.get(int(ip) >> (bits - length) << (bits - length))
                        if group is not None:
                            return Who(group, self.weights[group])
        return Who(principal or address)

    def weight(self, name: str) -> float:
        """The weight of share ``name`` (a group's, else 1)."""
        return self.weights.get(name, 1.0)


def parse_groups(text: str, where: str = "--fair-groups") -> Groups:
    """The groups a file's text names; raises :class:`GroupsError`."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise GroupsError(f"{where}: {exc}") from exc
    principals: dict[str, str] = {}
    networks: dict[Network, str] = {}
    weights: dict[str, float] = {}
    for name, value in data.items():
        if not name or len(name) > MAX_NAME_CHARS or not name.isprintable():
            raise GroupsError(f"{where}: a group's name must be 1-{MAX_NAME_CHARS} printable chars")
        members, weight = value, 1.0
        if isinstance(value, dict):
            unknown = set(value) - {"members", "weight"}
            if unknown:
                raise GroupsError(f"{where}: group {name!r}: unknown keys {sorted(unknown)}")
            members, weight = value.get("members", []), value.get("weight", 1.0)
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise GroupsError(f"{where}: group {name!r}: members must be a list of strings")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight > 0:
            raise GroupsError(f"{where}: group {name!r}: weight must be a number above 0")
        if weight > 1000:
            raise GroupsError(f"{where}: group {name!r}: weight above 1000")
        weights[name] = float(weight)
        for member in members:
            member = member.strip()
            if "@" in member or ("/" in member and not _is_network(member)):
                if member in principals and principals[member] != name:
                    raise GroupsError(f"{where}: {member!r} is in two groups")
                principals[member] = name
                continue
            try:
                network = ipaddress.ip_network(member, strict=False)
            except ValueError as exc:
                raise GroupsError(
                    f"{where}: group {name!r}: {member!r} is neither a principal "
                    "(name@REALM) nor an address or CIDR"
                ) from exc
            if networks.get(network, name) != name:
                raise GroupsError(f"{where}: {member!r} is in two groups")
            networks[network] = name
    by_length: dict[tuple[int, int], dict[int, str]] = {}
    for network, group in sorted(networks.items(), key=lambda i: i[0].prefixlen, reverse=True):
        by_length.setdefault((network.version, network.prefixlen), {})[
            int(network.network_address)
        ] = group
    return Groups(principals, by_length, weights)


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


class GroupsFile:
    """The groups file, cached: :meth:`groups` is cheap enough for every job."""

    def __init__(self, path: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._checked_at: float | None = None
        self._signature: tuple[int, int, int] | None = None
        self._groups = Groups()

    def load(self) -> Groups:
        """Read it now; raises :class:`GroupsError` (at start: fail fast)."""
        self._checked_at = self._clock()
        self._groups, self._signature = self._read()
        return self._groups

    def groups(self) -> Groups:
        now = self._clock()
        if self._checked_at is not None and now - self._checked_at < CHECK_INTERVAL_S:
            return self._groups
        self._checked_at = now
        try:
            st = os.stat(self.path)
            signature = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            signature = (-1, -1, -1)
        if signature == self._signature:
            return self._groups
        try:
            groups, signature = self._read()
        except GroupsError as exc:
            # Told once per change of the file; the groups last read stay.
            log.error("fair_groups_unreadable", path=self.path, reason=str(exc),
                      kept="the groups last read")  # fmt: skip
            self._signature = signature
            return self._groups
        self._groups, self._signature = groups, signature
        log.info("fair_groups_loaded", path=self.path, groups=len(groups.weights))
        return groups

    def _read(self) -> tuple[Groups, tuple[int, int, int]]:
        try:
            with open(self.path, "rb") as fh:
                st = os.fstat(fh.fileno())
                if st.st_size > MAX_FILE_BYTES:
                    raise GroupsError(f"{self.path}: larger than {MAX_FILE_BYTES} bytes")
                raw = fh.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise GroupsError(f"{self.path}: {exc}") from exc
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise GroupsError(f"{self.path}: not UTF-8 text") from exc
        return parse_groups(text, self.path), (st.st_ino, st.st_size, st.st_mtime_ns)
