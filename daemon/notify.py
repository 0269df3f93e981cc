"""systemd's service notifications (sd_notify), spoken without a library: one datagram
of ``NAME=VALUE`` lines to the Unix socket named by ``NOTIFY_SOCKET``.

A daemon says ``READY=1`` once it listens, ``RELOADING=1`` then ``READY=1`` around a
reload, ``STOPPING=1`` when it starts to drain (with ``EXTEND_TIMEOUT_USEC``: how long
the drain may take, so that the unit's stop timeout follows ``shutdown-grace``), and
``WATCHDOG=1`` every half of
``WATCHDOG_USEC`` while its event loop runs (a hung loop then stops the pings, and
systemd restarts the service). Without ``NOTIFY_SOCKET`` (not started by systemd, or
by a unit that is not ``Type=notify``) every call does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket

import structlog

log = structlog.get_logger("distlb.notify")

SEND_TIMEOUT_S = 1.0
STOP_MARGIN_S = 15.0
"""Past the shutdown grace, the time a drain may still take (the cancelled jobs'
kills, the final log line) before systemd may SIGKILL."""


def stopping(grace_s: float) -> tuple[str, str]:
    """What a daemon says as it starts to drain for ``grace_s``."""
    return "STOPPING=1", f"EXTEND_TIMEOUT_USEC={round((grace_s + STOP_MARGIN_S) * 1e6)}"


def notify(*states: str) -> bool:
    """Send ``states`` (e.g. ``"READY=1"``) to systemd; True when a socket took them.

    An unreachable socket is logged and otherwise ignored: a service must not stop
    because its supervisor cannot be told something."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(SEND_TIMEOUT_S)
            sock.connect(address)
            sock.sendall("\n".join(states).encode())
    except OSError as exc:
        log.warning("notify_failed", socket=os.environ.get("NOTIFY_SOCKET"), reason=str(exc))
        return False
    return True


def watchdog_interval_s() -> float | None:
    """How often systemd wants ``WATCHDOG=1`` from this process (half its
    ``WATCHDOG_USEC``), or None when it wants none from us: no watchdog, or one meant
    for another process (``WATCHDOG_PID``)."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 2e6


def start_watchdog(stack: contextlib.AsyncExitStack) -> None:
    """Ping systemd's watchdog from the running loop until ``stack`` unwinds (nothing
    when :func:`watchdog_interval_s` says no watchdog wants us)."""
    interval_s = watchdog_interval_s()
    if interval_s is None:
        return

    async def ping() -> None:
        while True:
            notify("WATCHDOG=1")
            await asyncio.sleep(interval_s)

    task = asyncio.create_task(ping())
    stack.callback(task.cancel)
