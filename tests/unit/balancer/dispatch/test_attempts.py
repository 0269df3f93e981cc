"""The attempt record's rules (balancer/dispatch/attempts.py): how each attempt's end is
written down and what the job does next (retry, rescue, hedge, give up), and who is at
fault when an attempt gets no reply by its deadline. A backend that compiled probes or
other jobs well meanwhile is not (a source can make a compile hang): the job ends, is not
sent on, and the backend is not charged; one that compiled nothing since is charged, and
the job may go elsewhere."""

from __future__ import annotations

import asyncio
import time

import pytest

from balancer.dispatch.attempts import MAX_TURNED_AWAY, Attempt, JobAttempts, Step, wake_at
from balancer.routing.backend import Backend, BackendSpec
from balancer.routing.compilers import CompilerMissing
from balancer.routing.estimates import Running
from balancer.settings import DispatchSettings
from client import ClientError, TurnedAway
from wire import Reply, Request

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


# The retry rules: what a job does after each attempt ends (JobAttempts.record, then
# JobAttempts.next_step), on futures that stand in for the sends' tasks.

MAX_SENDS = 5


def _healthy(name: str) -> Backend:
    backend = Backend(BackendSpec.parse(f"{name}:1"), rise=1)
    backend.on_success()
    return backend


def _ended(job: JobAttempts, attempt: Attempt, outcome: object) -> Reply | None:
    """``attempt``'s send ends with ``outcome`` (a reply, an exception, or "cancel")."""
    task = attempt.task
    if outcome == "cancel":
        task.cancel()
    elif isinstance(outcome, BaseException):
        task.set_exception(outcome)
    else:
        task.set_result(outcome)  # type: ignore[arg-type]
    job.running.remove(attempt)
    return job.record(attempt)


def _send(job: JobAttempts, backend: Backend, kind: str = "first") -> Attempt:
    attempt = _attempt(backend, time.monotonic())
    attempt.kind = kind
    if kind in ("late", "tail"):
        job.hedges += 1
    job.running.append(attempt)
    job.history.append(attempt)
    return attempt


def _job() -> JobAttempts:
    return JobAttempts(REQUEST, big=False, factor=1.0, affinity=None)


async def test_a_new_job_acquires_a_slot() -> None:
    assert _job().next_step(SETTINGS, MAX_SENDS) is Step.ACQUIRE


async def test_a_reply_wins_and_ends_the_job() -> None:
    job = _job()
    attempt = _send(job, _healthy("a"))
    reply = Reply(1, 0, b"", b"", b"obj")

    assert _ended(job, attempt, reply) is reply
    assert job.winner is attempt and attempt.result == "ok" and job.failures == 0


async def test_a_failure_counts_excludes_its_backend_and_retries_until_max_attempts() -> None:
    job = _job()
    for number, name in enumerate(["a", "b", "c"], start=1):
        attempt = _send(job, _healthy(name))
        assert _ended(job, attempt, ClientError(f"{name} broke")) is None
        assert (job.failures, attempt.result) == (number, "failed: ClientError")
        expected = Step.ACQUIRE if number < SETTINGS.max_attempts else Step.GIVE_UP_FAILED
        assert job.next_step(SETTINGS, MAX_SENDS) is expected
    assert job.failed == {"a:1", "b:1", "c:1"} and job.last_error == "c:1: c broke"


async def test_a_turn_away_is_no_failure_and_a_hedge_turned_away_is_given_back() -> None:
    job = _job()
    first = _send(job, _healthy("a"))
    late = _send(job, _healthy("b"), kind="late")
    assert job.hedges == 1

    _ended(job, late, TurnedAway("b: full"))

    assert (job.failures, job.hedges, late.result) == (0, 0, "turned_away")
    assert job.next_step(SETTINGS, MAX_SENDS) is Step.HEDGE  # (it may be backed up again)
    _ended(job, first, TurnedAway("a: full"))
    assert job.failed == set() and job.next_step(SETTINGS, MAX_SENDS) is Step.ACQUIRE


async def test_a_backend_without_the_compiler_is_refused_not_failed() -> None:
    job = _job()
    attempt = _send(job, _healthy("a"))

    _ended(job, attempt, CompilerMissing("a has no 'gcc'"))

    assert (job.refused, job.failed, job.failures) == ({"a:1"}, set(), 0)
    assert attempt.result == "no_compiler"


async def test_a_cancelled_copy_is_neither_a_failure_nor_a_reply() -> None:
    job = _job()
    attempt = _send(job, _healthy("a"))

    assert _ended(job, attempt, "cancel") is None
    assert (attempt.result, job.failures, job.winner) == ("cancelled", 0, None)


async def test_sends_and_turn_aways_are_bounded() -> None:
    job = _job()
    for name in "abcde":
        attempt = _send(job, _healthy(name))
        _ended(job, attempt, CompilerMissing("gone"))  # (no failure, but a send)
    assert job.sends == MAX_SENDS
    assert job.next_step(SETTINGS, MAX_SENDS) is Step.GIVE_UP_SENDS

    turned = _job()
    for number in range(MAX_TURNED_AWAY + MAX_SENDS):
        attempt = _send(turned, _healthy(f"t{number}"))
        assert turned.next_step(SETTINGS, MAX_SENDS) is not Step.GIVE_UP_SENDS
        _ended(turned, attempt, TurnedAway("full"))
    assert turned.sends == 0
    assert turned.next_step(SETTINGS, MAX_SENDS) is Step.GIVE_UP_SENDS


async def test_a_job_whose_backends_all_left_rotation_is_rescued() -> None:
    job = _job()
    backend = _healthy("a")
    _send(job, backend)
    assert job.next_step(SETTINGS, MAX_SENDS) is Step.HEDGE

    backend.on_failure("gone")
    backend.on_failure("gone")  # (fall 2: out of rotation)

    assert not backend.healthy
    assert job.next_step(SETTINGS, MAX_SENDS) is Step.RESCUE


async def test_no_copy_past_the_hedge_or_send_budget() -> None:
    job = _job()
    _send(job, _healthy("a"))
    _send(job, _healthy("b"), kind="late")
    _send(job, _healthy("c"), kind="tail")
    assert job.next_step(SETTINGS, MAX_SENDS) is Step.WAIT  # (max_hedges 2 spent)

    busy = _job()
    for name in "abcde":
        _send(busy, _healthy(name))
    assert busy.next_step(SETTINGS, MAX_SENDS) is Step.WAIT  # (five sends running)


async def test_a_deadline_or_late_time_passed_since_the_loop_looked_still_wakes_the_job() -> None:
    """The loop enforces deadlines and decides on hedges, then waits: a deadline or a
    late time that passes in between (by microseconds) must still end the wait at once,
    not be skipped for the next time further on (CI met a job a minute past its 3 s
    deadline, asleep until its hedge time)."""
    backend = Backend(BackendSpec.parse("a:1"))
    started = 1000.0
    attempt = _attempt(backend, started)
    attempt.deadline, attempt.late_at = started + 3, started + 120
    looked = attempt.deadline - 1e-6  # (the wait's own clock is past it by now)
    assert wake_at([attempt], may_hedge=True, looked=looked) == attempt.deadline
    attempt.deadline, attempt.late_at = started + 60, started + 5
    looked = attempt.late_at - 1e-6
    assert wake_at([attempt], may_hedge=True, looked=looked) == attempt.late_at


async def test_a_job_wakes_at_its_copies_late_time_only_while_it_may_hedge_and_before_it() -> None:
    backend = Backend(BackendSpec.parse("a:1"))
    started = 1000.0
    attempt = _attempt(backend, started)  # (late at +5, deadline at +60)
    assert wake_at([attempt], may_hedge=True, looked=started) == started + 5
    assert wake_at([attempt], may_hedge=False, looked=started) == started + 60
    # Late when it looked (nothing was free for a copy): the deadline, not a busy loop.
    assert wake_at([attempt], may_hedge=True, looked=started + 10) == started + 60
    assert wake_at([], may_hedge=True, looked=started) is None
