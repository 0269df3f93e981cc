"""Pump results in the balancer's cache (balancer/dispatch/caching.py ``pump_job``):
stored only from a sealed source whose identity and system headers' fingerprint were
the key's when the job was sent and when it answered, and whose report is known to be
current (a twenty-first review stored new headers' objects under the old fingerprint
through a balancer whose report was 30 s old); a hit gives the ``.d`` back."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from balancer.dispatch.attempts import Dispatched
from balancer.dispatch.caching import CacheFront
from balancer.dispatch.pump import PumpRoute, route_pump
from balancer.pool.pool import Pool
from balancer.routing.backend import Backend, BackendReport, BackendSpec
from balancer.settings import PoolSettings
from cache import CompilerIdentity, MemoryStore, ResultCache
from daemon.judge import Judge
from wire import Reply, Request
from wire.events import PumpEntry, PumpRequest

GCC = CompilerIdentity("gcc (Debian 12.2.0-14) 12.2.0", "ab" * 32)
DIRS = frozenset({"/usr/include"})
PUMP = PumpRequest(3, "/home/ann/p", ("gcc", "-c", "a.c", "-o", "a.o"),
                   (PumpEntry("/home/ann/p/a.c", body=b"int a;\n"),
                    PumpEntry("/usr/include", link="../" * 24 + "usr/include")))  # fmt: skip
REPLY = Reply(3, 0, b"a warning\n", b"", b"\x7fELF object", b"a.o: a.c\n")


def _report(headers: str) -> BackendReport:
    return BackendReport(4, 0, identities={"gcc": GCC}, sandboxed=True,
                         compilers={"gcc": (GCC.version, GCC.digest)},
                         sealed=frozenset({"gcc"}), pump={"gcc": (DIRS, headers)})  # fmt: skip


def _setup() -> tuple[Backend, CacheFront, Request, PumpRoute]:
    backend = Backend(BackendSpec.parse("10.0.0.1:3632,status=3633"))
    backend.report, backend.report_at, backend.healthy = _report("h1"), time.monotonic(), True
    pool = Pool([], PoolSettings())  # never started
    pool.backends = {backend.name: backend}
    front = CacheFront(ResultCache([MemoryStore(1 << 20)], b"k" * 32), pool, False)
    request, route = asyncio.run(route_pump([backend], Judge(), PUMP, keyed=True))
    assert route.key is not None and route.headers == "h1"
    return backend, front, request, route


async def _twice(front: CacheFront, request: Request, route: PumpRoute,
                 during: object = None) -> tuple[Dispatched, Dispatched, int]:  # fmt: skip
    compiled = 0

    async def compile_it() -> Dispatched:
        nonlocal compiled
        compiled += 1
        if callable(during):
            during()
        return Dispatched(REPLY, "10.0.0.1:3632", 1, False)

    first = await front.pump_job(route, request, compile_it)
    await asyncio.gather(*front.cache._background)  # (the store runs in the background)
    second = await front.pump_job(route, request, compile_it)
    return first, second, compiled


def test_a_stored_pump_result_is_a_hit_with_its_dependency_file() -> None:
    _, front, request, route = _setup()
    first, second, compiled = asyncio.run(_twice(front, request, route))
    assert compiled == 1 and not first.cached and second.cached
    assert second.reply == REPLY  # (object, warnings and .d)


@pytest.mark.parametrize("long_polling", [False, True])
def test_a_result_is_stored_only_while_its_backends_report_is_known_current(
    long_polling: bool,
) -> None:
    backend, front, request, route = _setup()
    backend.report_at = time.monotonic() - 30  # (a plain poll's, 30 s old)
    backend.long_polling = long_polling  # (held: a change would have answered it)
    _, second, compiled = asyncio.run(_twice(front, request, route))
    assert second.cached is long_polling
    assert compiled == (1 if long_polling else 2)
    assert front.not_stored_changed == (0 if long_polling else 2)


def test_a_result_whose_backend_reported_other_headers_meanwhile_is_not_stored() -> None:
    backend, front, request, route = _setup()

    def new_headers() -> None:
        backend.report = _report("h2")

    _, second, compiled = asyncio.run(_twice(front, request, route, new_headers))
    assert not second.cached and compiled == 2 and front.not_stored_changed == 2


def test_a_result_of_an_unsealed_backend_is_not_stored() -> None:
    backend, front, request, route = _setup()
    assert backend.report is not None
    backend.report = replace(backend.report, sealed=frozenset())
    _, second, compiled = asyncio.run(_twice(front, request, route))
    assert not second.cached and compiled == 2 and front.not_stored_unsandboxed == 2
