"""The attempt record's rules (balancer/dispatch/attempts.py): who is at fault when an attempt
gets no reply by its deadline. A backend that compiled probes or other jobs well
meanwhile is not (a source can make a compile hang): the job ends, is not sent on, and
the backend is not charged; one that compiled nothing since is charged, and the job may
go elsewhere."""

from __future__ import annotations

import asyncio
import time

import pytest

from balancer.dispatch.attempts import Attempt, JobAttempts
from balancer.routing.backend import Backend, BackendSpec
from balancer.routing.estimates import Running
from balancer.settings import DispatchSettings
from wire import Request

pytestmark = pytest.mark.asyncio

REQUEST = Request(protocol=1, argv=("gcc", "-c", "a.c", "-o", "a.o"), source=b"int a;\n")
SETTINGS = DispatchSettings(max_attempts=3, max_hedges=2)


def _attempt(backend: Backend, started: float) -> Attempt:
    task: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    return Attempt(
        backend=backend,
        task=task,  # type: ignore[arg-type]  # (a future stands in for the send's task)
        running=Running(backend.name, started, 1.0),
        kind="first",
        started=started,
        late_at=started + 5,
        deadline=started + 60,
    )


async def test_a_backend_that_compiled_since_the_attempt_began_is_not_charged() -> None:
    backend = Backend(BackendSpec.parse("a:1"))
    started = time.monotonic()
    attempt = _attempt(backend, started)
    job = JobAttempts(REQUEST, big=False, factor=1.0, affinity=None)
    job.running, job.history = [attempt], [attempt]
    backend.on_success()  # (a probe, after the attempt began)

    charged = job.missed_deadline(attempt, SETTINGS)

    assert charged is None
    assert job.failures >= SETTINGS.max_attempts  # (not sent on)
    assert job.hedges >= SETTINGS.max_hedges  # (no copy either)
    assert job.failed == set() and attempt.result == "deadline"
    assert "while the backend compiled others" in job.last_error


async def test_a_backend_that_compiled_nothing_since_is_charged_and_the_job_may_retry() -> None:
    backend = Backend(BackendSpec.parse("a:1"))
    backend.on_success()  # (before the attempt began: no evidence for the meanwhile)
    attempt = _attempt(backend, time.monotonic() + 1)
    job = JobAttempts(REQUEST, big=False, factor=1.0, affinity=None)
    job.running, job.history = [attempt], [attempt]

    charged = job.missed_deadline(attempt, SETTINGS)

    assert charged is not None and "its deadline" in charged
    assert job.failures == 1 < SETTINGS.max_attempts
    assert job.failed == {backend.name}
