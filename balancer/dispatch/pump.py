"""Where a pump job (protocol 3) may go, checked before any backend sees it.

A pump request is checked and judged here the way a distlb server does it (wire.pump
``check_tree``, daemon/pump_judge.py), so a request a server would refuse is answered
here with why and never forwarded. It goes only to backends that serve pump mode for
its compiler with every system include directory the client's include server asked
for as the server's own (a distlb server says which in its report:
``compilers.NAME.pump``); never to a distccd, whose pump support follows a link's
target and a name's ``..`` as given. Not cached.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from balancer.routing.backend import Backend
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


def serving(backends: Iterable[Backend], compiler: str, asked: frozenset[str]) -> list[Backend]:
    """The backends whose report says they serve pump for ``compiler``, and have every
    directory in ``asked`` among their pump compilers' system directories (one include
    server sends the links of every compiler its build has used)."""
    found = []
    for backend in backends:
        pump = backend.report.pump if backend.report is not None else {}
        distlb = backend.spec.kind == "distlb"
        if distlb and compiler in pump and asked <= frozenset().union(*pump.values()):
            found.append(backend)
    return found


async def route_pump(
    backends: list[Backend], judge: Judge, request: PumpRequest
) -> tuple[Request, PumpRoute]:
    """The job to dispatch (its argv; the bytes are the route's) and its route, or
    :class:`Refused` with why."""
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

    def allows(backend: Backend) -> bool:
        return bool(serving((backend,), compiler, asked))

    route = PumpRoute(encoded, allows, job.input_path, job.compiler)
    return Request(request.protocol, request.argv, b""), route
