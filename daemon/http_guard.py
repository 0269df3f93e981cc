"""Who may hold a connection to a daemon's HTTP face (the server's stats port, the
balancer's admin port), and for how long: the allowlist is checked when a connection is
accepted, before any byte of it is read; connections are capped in all and per address;
idle ones are closed (aiohttp's keep-alive timeout, which also bounds a connection that
never sends a request: its default kept one an hour, and 4,300 of them used every file
descriptor, so that the compile port stopped accepting)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from daemon.access import Network, is_allowed
from daemon.bounds import ConnectionLimits, RefusalLog

log = structlog.get_logger("distlb.http")


class HttpGuard:
    """The accept-time checks of one HTTP port: ``networks`` may connect (the pages'
    own allowlist still decides per path), within ``limits``."""

    def __init__(
        self, networks: Sequence[Network], limits: ConnectionLimits, idle_timeout_s: float
    ) -> None:
        self.networks = networks
        self.limits = limits
        self.idle_timeout_s = idle_timeout_s
        self.refused_access = 0
        self._log = RefusalLog(log, "http_refused")

    def snapshot(self) -> dict[str, int]:
        """What /status shows: connections open and refused, and the caps."""
        return {
            **self.limits.snapshot(),
            "refused": self.limits.refused + self.refused_access,
            "idle_timeout_s": int(self.idle_timeout_s),
        }

    def admit(self, address: str) -> bool:
        """Count a new connection from ``address``, or refuse it (logged, rate-bound)."""
        if not is_allowed(address, self.networks):
            self.refused_access += 1
            self._log.refused("address not allowed", address)
            return False
        refusal = self.limits.admit(address)
        if refusal is not None:
            self._log.refused(refusal, address)
            return False
        return True

    def protocol_factory(
        self, make_handler: Callable[[], asyncio.Protocol]
    ) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for ``loop.create_server``: each connection checked by
        :meth:`admit` first, then served by a protocol of ``make_handler``."""
        return lambda: _Guarded(self, make_handler)


class _Guarded(asyncio.Protocol):
    """One accepted connection: closed unread when :class:`HttpGuard` refuses it, else
    handed to the HTTP server's own protocol, every event passed on."""

    def __init__(self, guard: HttpGuard, make_handler: Callable[[], asyncio.Protocol]) -> None:
        self._guard = guard
        self._make_handler = make_handler
        self._inner: asyncio.Protocol | None = None
        self._address = "?"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer: Any = transport.get_extra_info("peername")
        self._address = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if not self._guard.admit(self._address):
            transport.close()
            return
        self._inner = self._make_handler()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._inner is not None:
            self._inner.connection_lost(exc)
            self._inner = None
            self._guard.limits.release(self._address)
