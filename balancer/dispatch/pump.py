"""Where a pump job (protocol 3) may go, checked before any backend sees it.

A pump request is checked and judged here the way a distlb server does it (wire.pump
``check_tree``, daemon/pump_judge.py), so a request a server would refuse is answered
here with why and never forwarded. It goes only to backends that serve pump mode for
its compiler with every system include directory the client's include server asked
for as the server's own (a distlb server says which in its report:
``compilers.NAME.pump``), and only those whose system headers are the farm's choice
(``compilers.NAME.pump_headers``: the fingerprint of the most slots); never to a
distccd, whose pump support follows a link's target and a name's ``..`` as given. Its
result is cached by the compiler, those system headers and the request's every byte
(cache/pump_key.py, balancer/dispatch/caching.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from balancer.routing.backend import Backend
from cache.keys import JobDigest
from cache.pump_key import cacheable_digest
from daemon.judge import Judge, Refused, normalize_compiler
from daemon.pump_judge import accept_pump
from wire.events import PumpRequest, Request
from wire.pump import RESERVED_TOPS, system_shaped
from wire.stream import LOOP_CODEC_BYTES
from wire.writer import encode_pump_request


@dataclass(frozen=True)
class PumpRoute:
    """A judged pump job: its bytes for every attempt, and where it may go."""

    encoded: bytes
    allows: Callable[[Backend], bool]
    """Whether a backend serves it, by its kind and report at the time of each pick
    (a reload may add a distccd, or make a backend one, while the job waits)."""
    input_name: str
    compiler: str
    headers: str = ""
    """The system headers' fingerprint it goes to (:func:`chosen_headers`)."""
    key: JobDigest | None = None
    """Its cache digest (cache/pump_key.py), when it is looked up and stored."""


def serving(
    backends: Iterable[Backend], compiler: str, asked: frozenset[str], headers: str | None = None
) -> list[Backend]:
    """The backends whose report says they serve pump for ``compiler`` (with ``headers``,
    its system headers' fingerprint, unless None), and have every directory in ``asked``
    among their pump compilers' system directories (one include server sends the links
    of every compiler its build has used)."""
    found = []
    for backend in backends:
        pump = backend.report.pump if backend.report is not None else {}
        if backend.spec.kind != "distlb" or compiler not in pump:
            continue
        dirs = frozenset().union(*(offered for offered, _ in pump.values()))
        if asked <= dirs and headers in (None, pump[compiler][1]):
            found.append(backend)
    return found


def chosen_headers(able: Iterable[Backend], compiler: str) -> str:
    """The system headers' fingerprint that jobs for ``compiler`` go to: the one of the
    most slots among ``able`` (ties: the smallest, so every balancer chooses alike), as
    the compiler identity is chosen (balancer/routing/compilers.py). A server that has
    not read its headers yet ("") is a group of its own."""
    slots: dict[str, int] = {}
    for backend in able:
        assert backend.report is not None
        fingerprint = backend.report.pump[compiler][1]
        slots[fingerprint] = slots.get(fingerprint, 0) + backend.report.slots
    return min(slots, key=lambda fingerprint: (-slots[fingerprint], fingerprint))


async def route_pump(
    backends: list[Backend], judge: Judge, request: PumpRequest, keyed: bool = False
) -> tuple[Request, PumpRoute]:
    """The job to dispatch (its argv; the bytes are the route's) and its route, or
    :class:`Refused` with why; ``keyed``: with its cache digest, if it may be cached."""
    if not request.argv:
        raise Refused("empty command")
    compiler = normalize_compiler(request.argv[0])
    asked = frozenset(
        e.name for e in request.entries if e.link is not None and system_shaped(e.name, e.link)
    )
    able = serving(backends, compiler, asked)
    if not able:
        raise Refused(
            f"no backend serves pump mode for {compiler!r} with the client's system include "
            "directories (a distccd never does here): the client compiles this file itself"
        )
    job, _ = await asyncio.to_thread(accept_pump, judge, request, sorted(asked), RESERVED_TOPS)
    size = sum(len(e.body) for e in request.entries)
    encoded = (
        await asyncio.to_thread(encode_pump_request, request)
        if size > LOOP_CODEC_BYTES
        else encode_pump_request(request)
    )

    headers = chosen_headers(able, compiler)
    key = None
    if keyed:  # (a scan and a hash of every body)
        key = (
            await asyncio.to_thread(cacheable_digest, request, headers)
            if size > LOOP_CODEC_BYTES
            else cacheable_digest(request, headers)
        )

    def allows(backend: Backend) -> bool:
        return bool(serving((backend,), compiler, asked, headers))

    route = PumpRoute(encoded, allows, job.input_path, job.compiler, headers, key)
    # (the compiler by its bare name, as a plain job's judged argv has it: routing goes by
    # it; CMake's launcher sends /usr/bin/gcc. The bytes sent keep it as typed.)
    return Request(request.protocol, (compiler, *request.argv[1:]), b""), route
