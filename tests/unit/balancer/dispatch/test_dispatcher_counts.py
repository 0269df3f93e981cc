"""What a backend's ``ok`` counts (balancer/dispatch/dispatcher.py,
balancer/routing/backend.py): the jobs it answered, so that the backends' counts add up
to the balancer's. A hedged job whose two copies both compile is one job: the copy that
lost still proves the backend healthy (``good_replies``), but is not a second ``ok``."""

from __future__ import annotations

import asyncio
import time

import pytest

from balancer.dispatch.attempts import Attempt, JobAttempts
from balancer.dispatch.dispatcher import Dispatcher
from balancer.pool.pool import Pool
from balancer.routing.backend import Backend, BackendSpec
from balancer.routing.estimates import Running
from balancer.settings import DispatchSettings, PoolSettings
from wire import Limits, Reply, Request

pytestmark = pytest.mark.asyncio

REQUEST = Request(protocol=1, argv=("gcc", "-c", "a.c", "-o", "a.o"), source=b"int a;\n")


def _done(reply: Reply) -> asyncio.Future[Reply]:
    future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
    future.set_result(reply)
    return future


def _attempt(backend: Backend, reply: Reply, kind: str) -> Attempt:
    now = time.monotonic()
    return Attempt(
        backend=backend,
        # A done Future stands in for the attempt's Task: the dispatcher uses only what
        # a Future has (done, result, cancel), but the field is typed Task (arg-type).
        task=_done(reply),  # type: ignore[arg-type]
        running=Running(backend.name, now, 1.0),
        kind=kind,
        started=now,
        late_at=now + 5,
        deadline=now + 60,
    )


async def test_a_hedged_job_whose_two_copies_both_compiled_counts_once() -> None:
    first, hedge = Backend(BackendSpec.parse("a:1")), Backend(BackendSpec.parse("b:1"))
    pool = Pool([], PoolSettings())  # never started
    pool.backends = {first.name: first, hedge.name: hedge}
    dispatcher = Dispatcher(pool, DispatchSettings(), Limits())
    good = Reply(protocol=1, status=0, stderr=b"", stdout=b"", obj=b"\x7fELF")
    job = JobAttempts(REQUEST, big=False, factor=1.0, affinity=None)
    # Both copies ended before the dispatcher looked: the race the count must survive
    job.running = [_attempt(first, good, "first"), _attempt(hedge, good, "late")]
    job.history = list(job.running)

    reply = dispatcher._harvest(job)
    assert reply is good
    dispatched = dispatcher._won(job, reply, dispatcher.queue.waiting(10))

    assert first.ok + hedge.ok == 1
    assert dispatched.backend == first.name and first.ok == 1
    assert [a.result for a in job.history] == ["ok", "closed"]


async def test_a_compile_error_is_no_backends_ok() -> None:
    backend = Backend(BackendSpec.parse("a:1"))
    pool = Pool([], PoolSettings())
    pool.backends = {backend.name: backend}
    dispatcher = Dispatcher(pool, DispatchSettings(), Limits())
    failed = Reply(protocol=1, status=1 << 8, stderr=b"error", stdout=b"", obj=b"")
    job = JobAttempts(REQUEST, big=False, factor=1.0, affinity=None)
    job.running = [_attempt(backend, failed, "first")]
    job.history = list(job.running)

    reply = dispatcher._harvest(job)
    assert reply is failed
    dispatcher._won(job, reply, dispatcher.queue.waiting(10))
    assert backend.ok == 0
