"""Reading a distcc server's own report: distlb's ``/status`` or distccd's ``--stats`` page.

Used by the balancer (to count free slots) and by the probe and monitor tools.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["distlb", "distccd", "auto"]
MAX_REPORT_BYTES = 64 * 1024
AUTO_SNIFF_S = 0.1


@dataclass(slots=True)
class Report:
    slots: int
    busy: int
    accepting: bool = True
    kind: str = "distlb"
    compilers: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per compiler name: ``version`` and ``digest`` (distlb servers only)."""
    result_cache: bool = False
    """The server keeps a local result cache (distlb servers only)."""


class ReportError(Exception):
    """A report could not be read or understood."""


def parse_distlb_status(body: bytes) -> Report:
    """A distlb server's ``/status``, or a balancer's (its totals over healthy backends)."""
    try:
        data = json.loads(body)
        if "totals" in data:
            totals = data["totals"]
            slots = int(totals["slots"])
            return Report(slots=slots, busy=slots - int(totals["free"]), kind="balancer")
        compilers = data.get("compilers") or {}
        if not isinstance(compilers, dict):
            raise ReportError("bad /status: compilers is not an object")
        return Report(
            slots=int(data["slots"]),
            busy=int(data["busy"]),
            accepting=bool(data.get("accepting", True)),
            compilers={str(k): dict(v) for k, v in compilers.items() if isinstance(v, dict)},
            result_cache=data.get("result_cache") is True,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ReportError(f"bad /status: {exc}") from exc


def parse_distccd_stats(body: bytes) -> Report:
    """Slots from ``dcc_max_kids``. distccd has no busy-slot count: its
    ``dcc_current_load`` is the host's running processes (from /proc/loadavg),
    so busy is reported as 0 and callers count their own jobs."""
    values = {}
    for line in body.decode("latin-1").splitlines():
        name, _, value = line.partition(" ")
        values[name] = value.strip()
    try:
        return Report(slots=int(values["dcc_max_kids"]), busy=0, kind="distccd")
    except (KeyError, ValueError) as exc:
        raise ReportError(f"bad distccd stats: {exc}") from exc


async def _read_all(host: str, port: int, request: bytes, timeout_s: float,
                    sniff_s: float = 0.0) -> bytes:  # fmt: skip
    """Connect, send ``request`` (after ``sniff_s`` of silence from the peer, if
    given: distccd speaks first), and read the answer until EOF, bounded."""
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            chunks: list[bytes] = []
            if sniff_s:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(sniff_s):
                        chunks.append(await reader.read(MAX_REPORT_BYTES))
            if request and not any(chunks):
                writer.write(request)
                await writer.drain()
            size = sum(map(len, chunks))
            while size < MAX_REPORT_BYTES:
                data = await reader.read(MAX_REPORT_BYTES - size)
                if not data:
                    break
                chunks.append(data)
                size += len(data)
            return b"".join(chunks)
        finally:
            writer.close()


async def fetch_report(host: str, port: int, kind: Kind, timeout_s: float) -> Report:
    """Read the report on ``host:port``. ``auto`` asks for distlb's ``/status`` and
    also understands distccd's page (which answers any connection the same way).
    Raises :class:`ReportError`."""
    # distccd answers any connection at once; bytes it has not read when it closes
    # would turn its answer into a reset, so it is sent nothing (and ``auto`` waits
    # a moment to hear whether the peer speaks first).
    request = b"" if kind == "distccd" else f"GET /status HTTP/1.0\r\nHost: {host}\r\n\r\n".encode()
    sniff_s = min(AUTO_SNIFF_S, timeout_s / 4) if kind == "auto" else 0.0
    try:
        raw = await _read_all(host, port, request, timeout_s, sniff_s)
    except (OSError, TimeoutError) as exc:
        raise ReportError(f"status port: {str(exc) or type(exc).__name__}") from exc
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = raw.partition(b"\n\n")
    if not head.startswith(b"HTTP/1.") or b" 200 " not in head.split(b"\n", 1)[0]:
        raise ReportError(f"status port answered {head[:40]!r}")
    if kind == "distccd" or (kind == "auto" and b"<distccstats>" in body):
        return parse_distccd_stats(body)
    return parse_distlb_status(body)
