"""Where a pump job may go (balancer/dispatch/pump.py): only to distlb servers whose
report says they serve pump for its compiler with the system directories the client
asked for, decided again at every pick (a review's reload added a distccd while a pump
job waited, and the job went to it)."""

from __future__ import annotations

import asyncio
import random

import pytest

from balancer.dispatch.acquire import SlotTaker
from balancer.dispatch.pump import route_pump
from balancer.pool.pool import Pool
from balancer.routing.backend import Backend, BackendReport, BackendSpec
from balancer.routing.queue import SlotQueue
from balancer.settings import DispatchSettings, PoolSettings
from daemon.judge import Judge, Refused
from wire.events import PumpEntry, PumpRequest

DIRS = frozenset({"/usr/include", "/usr/lib/gcc/x86_64-linux-gnu/12/include"})
REQUEST = PumpRequest(
    3,
    "/home/ann/p",
    ("gcc", "-c", "a.c", "-o", "a.o"),
    (PumpEntry("/home/ann/p/a.c", body=b"int a;\n"),
     *(PumpEntry(d, link="../" * 24 + d[1:]) for d in sorted(DIRS))),
)  # fmt: skip


def backend(
    spec: str, pump: dict[str, frozenset[str]] | None, headers: str = "h1", slots: int = 4
) -> Backend:
    found = Backend(BackendSpec.parse(spec))
    if pump is not None:
        compilers = {name: ("gcc (Debian 12.2.0-14) 12.2.0", "d1") for name in pump}
        offers = {name: (dirs, headers) for name, dirs in pump.items()}
        found.report = BackendReport(slots=slots, busy=0, compilers=compilers, pump=offers)
    return found


def test_a_pump_job_goes_only_where_pump_is_served_with_its_directories() -> None:
    serving = backend("s1:1", {"gcc": DIRS})
    others = [
        backend("s2:1", {"clang": DIRS}),  # (not for its compiler)
        backend("s3:1", {"gcc": frozenset({"/usr/include"})}),  # (a directory missing)
        backend("s4:1", None),  # (no report yet)
        backend("d1:1,kind=distccd", None),
    ]

    request, route = asyncio.run(route_pump([serving, *others], Judge(), REQUEST))

    assert request.protocol == 3 and request.argv == REQUEST.argv and request.source == b""
    assert route.allows(serving) and not any(route.allows(b) for b in others)
    assert route.input_name == "/home/ann/p/a.c" and route.compiler == "gcc"


def test_a_backend_added_or_changed_later_is_judged_when_picked() -> None:
    serving = backend("s1:1", {"gcc": DIRS})
    _, route = asyncio.run(route_pump([serving], Judge(), REQUEST))
    pool = Pool([], PoolSettings())  # never started
    taker = SlotTaker(pool, SlotQueue(), DispatchSettings(), set(), random.Random(1))
    added = backend("d1:1,kind=distccd", None)
    # The same name, now a distccd (a reload), its last report still the server's:
    changed = backend("s1:1,kind=distccd", {"gcc": DIRS})
    pool.backends = {serving.name: serving, added.name: added}

    assert taker.barred("gcc", set(), route.allows) == {added.name}
    pool.backends = {changed.name: changed, added.name: added}
    pool.routing.changed()
    assert taker.barred("gcc", set(), route.allows) == {changed.name, added.name}


def test_with_no_backend_that_serves_it_the_job_is_answered_with_why() -> None:
    with pytest.raises(Refused, match="no backend serves pump mode"):
        asyncio.run(route_pump([backend("d1:1,kind=distccd", None)], Judge(), REQUEST))


def test_pump_jobs_go_to_the_system_headers_of_the_most_slots() -> None:
    """Servers whose headers differ (another libc6-dev) never share one build's jobs:
    the fingerprint of the most slots wins; one not yet read ("") is a group of its own."""
    many = [backend(f"s{i}:1", {"gcc": DIRS}, headers="new", slots=4) for i in range(2)]
    other = backend("o1:1", {"gcc": DIRS}, headers="old", slots=6)
    unread = backend("u1:1", {"gcc": DIRS}, headers="", slots=2)

    _, route = asyncio.run(route_pump([*many, other, unread], Judge(), REQUEST))

    assert [route.allows(b) for b in (*many, other, unread)] == [True, True, False, False]
    _, alone = asyncio.run(route_pump([other, unread], Judge(), REQUEST))
    assert alone.allows(other) and not alone.allows(unread)
