"""What a client can exhaust, bounded, in both daemons: open connections (in all and
per address, on the compile port and the HTTP port), the file descriptors those need,
and the flags of the byte budgets (daemon/budgets.py)."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from daemon.budgets import ByteBudget, InflateBudget
from daemon.config import ConfigError

log = structlog.get_logger("distlb.bounds")

DEFAULT_MAX_CONNECTIONS = 4096
DEFAULT_MAX_CONNECTIONS_PER_ADDRESS = 512
"""A developer's ``make -j256`` through one address fits; a flood from one does not
crowd out the rest."""
DEFAULT_MAX_INFLATING_MB = 1024
DEFAULT_REQUEST_MEMORY_MB = 1024
DEFAULT_MAX_HTTP_CONNECTIONS = 1024
DEFAULT_MAX_HTTP_CONNECTIONS_PER_ADDRESS = 128
"""A balancer host polls a server's status port from one address: a long poll per
balancer process (up to 64 with --workers), each one connection at a time."""
DEFAULT_HTTP_IDLE_TIMEOUT_S = 30.0
"""Longer than a dashboard's one-second polls, far shorter than aiohttp's own hour."""
_FDS_SPARE = 128
"""File descriptors kept back for listening sockets, logs, pipes and compilers."""


def add_bounds_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-connections",
        type=int,
        metavar="N",
        help="client connections open at once; more are closed (default {default},"
        " and never more than the file descriptors allow)",
    )
    parser.add_argument(
        "--max-connections-per-address",
        type=int,
        metavar="N",
        help="client connections open at once from one address (default {default})",
    )
    parser.add_argument(
        "--max-http-connections",
        type=int,
        metavar="N",
        help="connections open at once to the HTTP port (status, admin); more are closed "
        "(default {default})",
    )
    parser.add_argument(
        "--max-http-connections-per-address",
        type=int,
        metavar="N",
        help="connections open at once to the HTTP port from one address (default {default})",
    )
    parser.add_argument(
        "--http-idle-timeout",
        type=float,
        metavar="S",
        help="an HTTP connection with no request in progress is closed after this long "
        "(default {default})",
    )
    parser.add_argument(
        "--first-byte-timeout",
        type=float,
        metavar="S",
        help="a client connection that sends nothing for this long after it is accepted "
        "is closed (distcc's client sends its command line at once; its source may come "
        "later, within --io-timeout) (default {default})",
    )
    parser.add_argument(
        "--request-memory-mb",
        type=int,
        metavar="MB",
        help="bytes of requests held at once, as they arrive (plain sources until their "
        "job ends, LZO ones until inflated); a source waits, unread, for room to be read "
        "(default {default})",
    )
    parser.add_argument(
        "--max-inflating-mb",
        type=int,
        metavar="MB",
        help="bytes LZO sources may inflate to, and hold once inflated until their job "
        "ends; more wait their turn (default {default})",
    )


@dataclass
class BoundsConfig:
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_connections_per_address: int = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS
    max_inflating_mb: int = DEFAULT_MAX_INFLATING_MB
    request_memory_mb: int = DEFAULT_REQUEST_MEMORY_MB
    max_http_connections: int = DEFAULT_MAX_HTTP_CONNECTIONS
    max_http_connections_per_address: int = DEFAULT_MAX_HTTP_CONNECTIONS_PER_ADDRESS
    http_idle_timeout: float = DEFAULT_HTTP_IDLE_TIMEOUT_S
    first_byte_timeout: float = 10.0

    def connection_limits(self) -> ConnectionLimits:
        """The connection caps, the process's file descriptor limit raised to fit them
        and the HTTP port's (as far as its hard limit allows; the HTTP port's first).
        Raises ConfigError for caps below 1."""
        caps = (
            self.max_connections,
            self.max_connections_per_address,
            self.max_inflating_mb,
            self.request_memory_mb,
            self.max_http_connections,
            self.max_http_connections_per_address,
        )
        if min(caps) < 1 or min(self.http_idle_timeout, self.first_byte_timeout) <= 0:
            raise ConfigError(
                "--max-connections, --max-connections-per-address, --max-inflating-mb, "
                "--request-memory-mb, --max-http-connections and "
                "--max-http-connections-per-address must be at least 1, "
                "--http-idle-timeout and --first-byte-timeout positive"
            )
        reserved = _FDS_SPARE + self.max_http_connections
        available = raise_open_files_limit(self.max_connections + reserved) - reserved
        total = max(1, min(self.max_connections, available))
        if total < self.max_connections:
            log.warning("connections_capped", asked=self.max_connections, allowed=total,
                        reason="the file descriptor limit")  # fmt: skip
        return ConnectionLimits(total, min(total, self.max_connections_per_address))

    def http_limits(self) -> ConnectionLimits:
        """The HTTP port's connection caps (its descriptors are kept by
        :meth:`connection_limits`)."""
        total = self.max_http_connections
        return ConnectionLimits(total, min(total, self.max_http_connections_per_address))

    def inflate_budget(self) -> InflateBudget:
        return InflateBudget(self.max_inflating_mb * 1024 * 1024)

    def request_budget(self) -> ByteBudget:
        return ByteBudget(self.request_memory_mb * 1024 * 1024, "--request-memory-mb")


def raise_open_files_limit(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards ``wanted`` (within the hard
    limit); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


class ConnectionLimits:
    """Counts open client connections, in all and per address (pure; on the loop)."""

    def __init__(self, total: int, per_address: int) -> None:
        self.total = total
        self.per_address = per_address
        self.open = 0
        self.refused = 0
        self._by_address: dict[str, int] = {}

    def snapshot(self) -> dict[str, int]:
        return {"open": self.open, "max": self.total, "max_per_address": self.per_address,
                "addresses": len(self._by_address)}  # fmt: skip

    def admit(self, address: str) -> str | None:
        """Count a new connection from ``address``; or why it may not stay open."""
        if self.open >= self.total:
            self.refused += 1
            return f"{self.total} connections are open (--max-connections)"
        held = self._by_address.get(address, 0)
        if held >= self.per_address:
            self.refused += 1
            return (f"{held} connections are open from {address} "
                    "(--max-connections-per-address)")  # fmt: skip
        self.open += 1
        self._by_address[address] = held + 1
        return None

    def release(self, address: str) -> None:
        held = self._by_address.get(address, 0)
        if held <= 0:
            raise RuntimeError(f"released a connection from {address} that was not admitted")
        self.open -= 1
        if held == 1:
            del self._by_address[address]
        else:
            self._by_address[address] = held - 1

    def from_address(self, address: str) -> int:
        return self._by_address.get(address, 0)

    def adopt(self, fresh: ConnectionLimits) -> None:
        """A reload's caps (``fresh``'s): open connections stay; new ones meet the caps."""
        self.total, self.per_address = fresh.total, fresh.per_address


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
REFUSAL_LOG_INTERVAL_S = 1.0


REFUSAL_LOG_BURST = 20
JOB_REFUSAL_LOG_BURST = 64
"""Refused jobs (the judge's): a build's worth of lines, each with its reason, before
the budget (a fifth review's refused requests wrote 90 MB of log a second)."""


class RefusalLog:
    """Logs refusals of one kind: a burst of REFUSAL_LOG_BURST, then at most one every
    REFUSAL_LOG_INTERVAL_S, each line with how many it did not mention since (a flood
    must not flood the log: a review's connect-and-close loop wrote 0.45 MB/s)."""

    def __init__(self, logger: Any, event: str, burst: int = REFUSAL_LOG_BURST) -> None:
        self._log = logger
        self._event = event
        self._burst = float(burst)
        self._tokens = self._burst
        self._at = time.monotonic()
        self._unlogged = 0

    def refused(self, reason: str, address: str, **fields: Any) -> None:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._at) / REFUSAL_LOG_INTERVAL_S)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self._log.warning(self._event, reason=reason, client=address,
                              not_logged_since=self._unlogged, **fields)  # fmt: skip
            self._unlogged = 0
        else:
            self._unlogged += 1


def connection_holder(address: str) -> str:
    """Who a connection's place is counted against: its IPv4 address, or the /64 of an
    IPv6 one (one host holds a whole /64, and could spread over it)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return address


def limit_connections(
    limits: ConnectionLimits, handler: Handler, on_refused: Callable[[], None]
) -> Handler:
    """``handler`` for ``asyncio.start_server``, behind ``limits``: a connection over a
    cap is closed at once and counted (``on_refused``), and logged (:class:`RefusalLog`)."""
    refusals = RefusalLog(log, "turned_away")

    async def limited(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if peer else "?"
        holder = connection_holder(address)
        refusal = limits.admit(holder)
        if refusal is not None:
            on_refused()
            refusals.refused(refusal, address)
            writer.close()
            return
        try:
            await handler(reader, writer)
        finally:
            limits.release(holder)

    return limited
