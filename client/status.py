"""Reading a distcc server's own report: distlb's ``/status`` or distccd's ``--stats`` page.

Used by the balancer (to count free slots) and by the probe and monitor tools.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import zlib
from dataclasses import dataclass, field
from typing import Literal

ReportFormat = Literal["distlb", "distccd", "auto"]
MAX_REPORT_BYTES = 64 * 1024
AUTO_SNIFF_S = 0.1
MAX_REPORT_WAIT_S = 30.0
"""Longest a distlb server holds a report request (``/status?since=TOKEN&wait=S``)."""
CHANGE_TOKEN = re.compile(r"[0-9a-f.]{1,100}")
"""What a report's ``change`` may be (it goes back into a request line)."""


@dataclass(slots=True)
class ServerReport:
    slots: int
    busy: int
    accepting: bool = True
    kind: str = "distlb"
    compilers: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per compiler name: ``version`` and ``digest`` (distlb servers only)."""
    result_cache: bool = False
    """The server keeps a local result cache (distlb servers only)."""
    change: str = ""
    """What this report says, in short (:func:`change_token`): ask with it to be answered
    only once that has changed enough (distlb servers only)."""
    sandboxed: bool = False
    """The server runs every compile in its sandboxes (``--sandbox bwrap``; distlb
    servers only: distccd never does)."""
    holders: tuple[str, ...] | None = None
    """Each busy slot's connection, as the client's ``IP:PORT`` (distlb servers only;
    None: not said)."""
    configured_slots: int | None = None
    """The slots the server is configured with, when it offers fewer now (``slots``) while
    its machine is busy with other work or short of memory (distlb servers only)."""
    machine: dict[str, float | int | None] | None = None
    """What the server's machine has free: ``foreign_load`` (runnable tasks not the
    server's), ``mem_available_mb``, ``cpus`` (distlb servers only)."""


def compilers_revision(compilers: dict[str, dict[str, str]]) -> str:
    """A short digest of a server's compiler list, for :func:`change_token`."""
    return format(zlib.crc32(json.dumps(compilers, sort_keys=True).encode()), "08x")


def change_token(busy: int, accepting: bool, compilers_rev: str) -> str:
    return f"{busy}.{int(accepting)}.{compilers_rev}"


def expecting(token: str, busy: int) -> str:
    """``token`` with its busy count replaced by ``busy``: a balancer asks to hear when
    the server's state differs from what it now believes (the last report's count of
    others' jobs plus its own now), not from what the server said then."""
    _, sep, rest = token.partition(".")
    return f"{max(0, busy)}.{rest}" if sep else token


def changed_enough(token: str, slots: int, busy: int, accepting: bool, compilers_rev: str) -> bool:
    """Whether a server's state has moved far enough from the report ``token`` describes
    to answer a long poll before its wait ends: it began or stopped accepting, its
    compilers changed, it became full or stopped being full, or its busy count moved by
    an eighth of its slots (at least one). Smaller moves wait: the balancer counts its
    own jobs, and a turn-away corrects the rest. A token it cannot read: yes."""
    old_busy_text, _, rest = token.partition(".")
    old_accepting, _, old_rev = rest.partition(".")
    try:
        old_busy = int(old_busy_text)
    except ValueError:
        return True
    if old_accepting != str(int(accepting)) or old_rev != compilers_rev:
        return True
    if (old_busy >= slots) != (busy >= slots):
        return True
    return abs(busy - old_busy) >= max(1, slots // 8)


class ReportError(Exception):
    """A report could not be read or understood."""


def parse_distlb_status(body: bytes) -> ServerReport:
    """A distlb server's ``/status``, or a balancer's (its totals over healthy backends)."""
    try:
        data = json.loads(body)
        if not isinstance(data, dict):
            raise ReportError(f"bad /status: a JSON {type(data).__name__}, not an object")
        if "totals" in data:
            totals = data["totals"]
            slots = int(totals["slots"])
            return ServerReport(slots=slots, busy=slots - int(totals["free"]), kind="balancer")
        compilers = data.get("compilers") or {}
        if not isinstance(compilers, dict):
            raise ReportError("bad /status: compilers is not an object")
        configured = int(data["slots"])
        offered = data.get("offered")
        return ServerReport(
            slots=max(0, min(configured, offered))
            if isinstance(offered, int) and not isinstance(offered, bool)
            else configured,
            configured_slots=configured,
            machine=_machine(data.get("machine")),
            busy=int(data["busy"]),
            accepting=bool(data.get("accepting", True)),
            compilers={str(k): dict(v) for k, v in compilers.items() if isinstance(v, dict)},
            result_cache=data.get("result_cache") is True,
            change=_token(data.get("change")),
            sandboxed=isinstance(data.get("sandbox"), dict)
            and data["sandbox"].get("mode") == "bwrap",
            holders=_holders(data.get("holders"), int(data["slots"])),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ReportError(f"bad /status: {exc}") from exc


MAX_ADDRESS_CHARS = 64
"""Longer than any ``IP:PORT`` (an IPv6 address with a zone, in brackets, and a port)."""


def _holders(value: object, slots: int) -> tuple[str, ...] | None:
    """A report's slot holders: a list of at most ``slots`` addresses, else None."""
    if not isinstance(value, list) or len(value) > max(0, slots):
        return None
    if not all(isinstance(item, str) and len(item) <= MAX_ADDRESS_CHARS for item in value):
        return None
    return tuple(value)


def _machine(value: object) -> dict[str, float | int | None] | None:
    """A report's machine figures: the known keys, numbers or null, else None."""
    if not isinstance(value, dict):
        return None
    known = ("cpus", "foreign_load", "mem_available_mb", "memory_pressure", "cpu_pressure")
    return {
        key: value[key] if isinstance(value.get(key), int | float) else None
        for key in known
        if not isinstance(value.get(key), bool)
    }


def _token(value: object) -> str:
    return value if isinstance(value, str) and CHANGE_TOKEN.fullmatch(value) else ""


def parse_distccd_stats(body: bytes) -> ServerReport:
    """Slots from ``dcc_max_kids``. distccd has no busy-slot count: its
    ``dcc_current_load`` is the host's running processes (from /proc/loadavg),
    so busy is reported as 0 and callers count their own jobs."""
    values = {}
    for line in body.decode("latin-1").splitlines():
        name, _, value = line.partition(" ")
        values[name] = value.strip()
    try:
        return ServerReport(slots=int(values["dcc_max_kids"]), busy=0, kind="distccd")
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


async def fetch_report(
    host: str, port: int, kind: ReportFormat, timeout_s: float, since: str = "", wait_s: float = 0.0
) -> ServerReport:
    """Read the report on ``host:port``. ``auto`` asks for distlb's ``/status`` and
    also understands distccd's page (which answers any connection the same way).
    With ``since`` (a report's ``change``) and ``wait_s``, a distlb server answers once
    its state has changed enough since that report, or after ``wait_s`` (a long poll;
    ``timeout_s`` should allow for the wait). Raises :class:`ReportError`."""
    # distccd answers any connection at once; bytes it has not read when it closes
    # would turn its answer into a reset, so it is sent nothing (and ``auto`` waits
    # a moment to hear whether the peer speaks first).
    path = "/status"
    if since and wait_s > 0 and kind == "distlb":
        path += f"?since={since}&wait={min(wait_s, MAX_REPORT_WAIT_S):g}"
    request = b"" if kind == "distccd" else f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode()
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
