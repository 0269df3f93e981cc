"""Where distcc servers are: DNS name patterns, DNS SRV records, host files, DISTCC_HOSTS.

DNS is asked of a chosen server (``--dns-server``) or the system's resolvers,
with a bounded number of names and a deadline. The probe asks once; the balancer asks
again and again (:func:`srv_records`, :func:`host_records`: with the answers' TTL).
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver

DEFAULT_PORT = 3632
MAX_PATTERN_NAMES = 256
MAX_RECORDS = 4096
PARALLEL_QUERIES = 16
"""Targets one name may give (SRV records times their addresses): more are dropped."""


@dataclass(frozen=True, slots=True)
class Target:
    """A server to probe: where it is, and how the user named it."""

    host: str
    port: int = DEFAULT_PORT
    name: str = ""
    slots: int | None = None
    """A slot count given with the host (``host/8`` in DISTCC_HOSTS)."""
    status_port: int | None = None
    """Where its report is (``host,status=3634``, a distlb extension); default port+1."""
    options: tuple[str, ...] = ()
    """The distcc host options it was written with (``lzo``, ``cpp``, ``auth``...), kept
    so that a qualified list says them again."""

    @property
    def label(self) -> str:
        return f"{self.name or self.host}:{self.port}"


class DiscoveryError(Exception):
    """A source of servers could not be read."""


def parse_host_entry(entry: str, default_port: int = DEFAULT_PORT) -> Target | None:
    """One DISTCC_HOSTS / host-file word (``host[:port][/limit][,options]``).

    Returns None for entries that name no TCP server (``localhost`` as the local
    machine, ``@ssh`` hosts, ``+zeroconf``, ``--randomize``, ``--localslots…``).
    """
    entry = entry.strip()
    if not entry or entry.startswith(("#", "@", "+", "-")) or entry == "localhost":
        return None
    entry, *options = entry.split(",")
    status_port = None
    kept = []
    for option in options:
        if option.startswith("status="):
            try:
                status_port = int(option[len("status=") :])
            except ValueError:
                raise DiscoveryError(f"bad status port in {entry!r}") from None
        elif option:
            kept.append(option)
    entry, _, limit = entry.partition("/")
    host, port = entry, default_port
    if entry.startswith("["):  # [v6]:port
        host, _, rest = entry[1:].partition("]")
        if rest.startswith(":"):
            port = int(rest[1:])
    elif entry.count(":") == 1:
        host, port_text = entry.split(":")
        port = int(port_text)
    if not host or not 0 < port < 65536:
        raise DiscoveryError(f"bad host entry {entry!r}")
    slots = int(limit) if limit.isdigit() else None
    return Target(host, port, host, slots, status_port, tuple(kept))


def parse_hosts_text(text: str, default_port: int = DEFAULT_PORT) -> list[Target]:
    """All servers in DISTCC_HOSTS syntax (spaces or newlines; ``#`` comments)."""
    targets = []
    for line in text.splitlines():
        for word in line.split("#", 1)[0].split():
            target = parse_host_entry(word, default_port)
            if target is not None:
                targets.append(target)
    return targets


def _resolver(dns_server: str | None, timeout_s: float) -> dns.asyncresolver.Resolver:
    resolver = dns.asyncresolver.Resolver(configure=dns_server is None)
    if dns_server is not None:
        host, _, port = (
            dns_server.rpartition(":") if dns_server.count(":") == 1 else (dns_server, "", "")
        )
        resolver.nameservers = [host or dns_server]
        resolver.port = int(port) if port else 53
    resolver.lifetime = timeout_s
    resolver.timeout = timeout_s
    return resolver


async def from_pattern(
    pattern: str,
    *,
    port: int = DEFAULT_PORT,
    gap: int = 0,
    dns_server: str | None = None,
    timeout_s: float = 2.0,
    max_names: int = 64,
) -> list[Target]:
    """Names ``pattern % 1``, ``pattern % 2``, … (lsdistcc's ``distcc%d``), stopping
    after ``gap + 1`` names in a row do not resolve, or at ``max_names``."""
    if "%d" not in pattern:
        raise DiscoveryError(f"pattern {pattern!r} needs a %d")
    resolver = _resolver(dns_server, timeout_s)
    targets: list[Target] = []
    missing = 0
    batch = max(4, gap + 1)
    index = 1
    limit = min(max_names, MAX_PATTERN_NAMES)
    while index <= limit and missing <= gap:
        names = [
            pattern.replace("%d", str(i)) for i in range(index, min(limit, index + batch - 1) + 1)
        ]
        results = await asyncio.gather(*(_all_addresses(resolver, n, ("A",)) for n in names))
        for name, (addresses, _) in zip(names, results, strict=True):
            if missing > gap:
                break
            if not addresses:
                missing += 1
                continue
            missing = 0
            targets += [Target(host=a, port=port, name=name) for a in addresses]
        index += len(names)
    return targets


async def from_srv(
    domain: str, *, dns_server: str | None = None, timeout_s: float = 2.0
) -> list[Target]:
    """Servers from ``_distcc._tcp.DOMAIN`` SRV records (each target's addresses)."""
    found = await srv_records(domain, dns_server=dns_server, timeout_s=timeout_s)
    return [Target(host=a, port=port, name=name) for a, port, _, name in found.servers]


@dataclass(frozen=True, slots=True)
class Found:
    """What a name says now: its servers (address, port, SRV weight) and for how long
    that holds (the smallest TTL of the answers read; None: no answer had one)."""

    servers: tuple[tuple[str, int, int, str], ...]
    """(address, port, SRV weight or 0, the name it came from)"""
    ttl_s: float | None
    failed: tuple[str, ...] = ()
    """SRV targets whose addresses could not be looked up (their records are left out)."""


async def _all_addresses(
    resolver: dns.asyncresolver.Resolver, name: str, kinds: tuple[str, ...] = ("A", "AAAA")
) -> tuple[list[str], float | None]:
    """Every address of ``name`` of these ``kinds`` and the smallest TTL (NXDOMAIN:
    none); a name that is an address is itself."""
    try:
        ipaddress.ip_address(name)
        return [name], None
    except ValueError:
        pass
    addresses: list[str] = []
    ttls: list[float] = []
    for kind in kinds:
        try:
            answer = await resolver.resolve(name, kind)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            continue
        except dns.exception.DNSException as exc:
            raise DiscoveryError(f"{name} {kind}: {exc}") from exc
        addresses += sorted(rr.address for rr in answer)
        if answer.rrset is not None:
            ttls.append(float(answer.rrset.ttl))
    return addresses, min(ttls, default=None)


async def host_records(
    name: str, port: int, *, dns_server: str | None = None, timeout_s: float = 2.0
) -> Found:
    """Every A/AAAA address of ``name``, each a server at ``port``."""
    resolver = _resolver(dns_server, timeout_s)
    addresses, ttl = await _all_addresses(resolver, name)
    return Found(tuple((a, port, 0, name) for a in addresses[:MAX_RECORDS]), ttl)


async def srv_records(name: str, *, dns_server: str | None = None, timeout_s: float = 2.0) -> Found:
    """The servers of SRV ``name`` (``_distcc._tcp.DOMAIN``, or DOMAIN for that): each
    record's target's addresses at its port, with its weight, in priority order."""
    resolver = _resolver(dns_server, timeout_s)
    name = name if name.startswith("_distcc.") else f"_distcc._tcp.{name}"
    try:
        answer = await resolver.resolve(name, "SRV")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return Found((), None)
    except dns.exception.DNSException as exc:
        raise DiscoveryError(f"{name} SRV: {exc}") from exc
    ttls = [float(answer.rrset.ttl)] if answer.rrset is not None else []
    records = sorted(answer, key=lambda rr: (rr.priority, -rr.weight, str(rr.target)))
    given = _additional(answer)
    # The answer's additional records often hold the targets' addresses (dnsmasq,
    # CoreDNS for a headless Service): one query for the lot. Others are asked for, a
    # few at a time.
    records = [rr for rr in records[:MAX_RECORDS] if 0 < int(rr.port) < 65536]
    hosts = list(dict.fromkeys(str(rr.target).rstrip(".") for rr in records))
    missing = [host for host in hosts if host not in given]
    failed: list[str] = []
    for start in range(0, len(missing), PARALLEL_QUERIES):
        batch = missing[start : start + PARALLEL_QUERIES]
        results = await asyncio.gather(
            *(_all_addresses(resolver, host) for host in batch), return_exceptions=True
        )
        for host, result in zip(batch, results, strict=True):
            if isinstance(result, DiscoveryError):
                failed.append(host)  # (one target's trouble is not the others')
            elif isinstance(result, BaseException):
                raise result
            else:
                given[host] = result
    found: list[tuple[str, int, int, str]] = []
    for rr in records:
        host = str(rr.target).rstrip(".")
        if host not in given:
            continue
        addresses, ttl = given[host]
        found += [(a, int(rr.port), int(rr.weight), host) for a in addresses]
        if ttl is not None:
            ttls.append(ttl)
        if len(found) >= MAX_RECORDS:
            break
    return Found(tuple(found[:MAX_RECORDS]), min(ttls, default=None), tuple(failed))


def _additional(answer: dns.resolver.Answer) -> dict[str, tuple[list[str], float | None]]:
    """The A/AAAA records an answer's additional section holds, per name."""
    given: dict[str, tuple[list[str], float | None]] = {}
    for rrset in answer.response.additional:
        if rrset.rdtype not in (dns.rdatatype.A, dns.rdatatype.AAAA):
            continue
        name = str(rrset.name).rstrip(".")
        addresses, ttl = given.get(name, ([], None))
        addresses = sorted({*addresses, *(rr.address for rr in rrset)})
        given[name] = (addresses, min(float(rrset.ttl), ttl if ttl is not None else rrset.ttl))
    return given


def unique(targets: list[Target]) -> list[Target]:
    """First occurrence of each address and port."""
    seen: set[tuple[str, int]] = set()
    out = []
    for target in targets:
        key = (target.host, target.port)
        if key not in seen:
            seen.add(key)
            out.append(target)
    return out
