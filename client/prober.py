"""Probe servers with a trivial compile, all at once, each bounded by one deadline."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from client.discovery import Target
from client.distcc import ClientError, compile_remote
from client.status import ReportError, fetch_report
from wire import Request

PROBE_SOURCE = b"int distlb_probe(void) { return 42; }\n"
PROBE_ARGS = ("-c", "distlb-probe.c", "-o", "distlb-probe.o")
"""A probe's command line after the compiler's name."""


def probe_request(compiler: str, protocol: int = 1) -> Request:
    """The trivial compile every probe asks for."""
    return Request(protocol, (compiler, *PROBE_ARGS), PROBE_SOURCE)


def is_probe(request: Request) -> bool:
    """Whether ``request`` (as it came, its source inflated) is exactly a probe's:
    :func:`probe_request`'s command line and source, for any compiler and protocol."""
    return request.argv[1:] == PROBE_ARGS and request.source == PROBE_SOURCE


@dataclass
class ProbeResult:
    target: Target
    ok: bool
    seconds: float | None
    error: str = ""
    slots: int | None = None
    busy: int | None = None
    compilers: dict[str, str] = field(default_factory=dict)
    """Per compiler name, the version line its status says (distlb servers only)."""


async def probe_one(
    target: Target, compiler: str, deadline_s: float, status_port: int | None = None
) -> ProbeResult:
    """Compile the trivial probe on ``target`` within ``deadline_s`` (connect included);
    read its status alongside (``status_port``, else the one the target was written
    with, else port+1) for its slots."""
    started = time.monotonic()

    async def compile_it() -> ProbeResult:
        try:
            async with asyncio.timeout(deadline_s):
                reply = await compile_remote(
                    target.host,
                    target.port,
                    probe_request(compiler),
                    connect_timeout_s=deadline_s,
                    timeout_s=deadline_s,
                )
        except TimeoutError:
            return ProbeResult(target, False, None, f"no reply within {deadline_s} s")
        except ClientError as exc:
            return ProbeResult(target, False, None, f"{type(exc).__name__}: {exc}")
        seconds = time.monotonic() - started
        if reply.status != 0 or not reply.obj:
            message = reply.stderr.decode("utf-8", "replace").strip()[:200]
            return ProbeResult(target, False, seconds, f"compile failed: {message}")
        return ProbeResult(target, True, seconds)

    async def status() -> tuple[int, int, dict[str, str]] | None:
        try:
            report = await fetch_report(
                target.host,
                status_port or target.status_port or target.port + 1,
                "auto",
                deadline_s,
            )
        except ReportError:
            return None
        versions = {name: str(info.get("version", "")) for name, info in report.compilers.items()}
        return report.slots, report.busy, versions

    result, report = await asyncio.gather(compile_it(), status())
    if report is not None:
        result.slots, result.busy, result.compilers = report
    elif target.slots is not None:
        result.slots = target.slots
    return result


async def probe_all(targets: list[Target], compiler: str, deadline_s: float) -> list[ProbeResult]:
    """Every target at once; the whole run takes about ``deadline_s``."""
    return list(await asyncio.gather(*(probe_one(t, compiler, deadline_s) for t in targets)))
