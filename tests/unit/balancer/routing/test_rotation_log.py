"""What the balancer logs of a backend's checks (balancer/routing/rotation_log.py): each change
of state, and while a backend is out of rotation, or has never come in, each reason it
fails for once, never a line per probe."""

from __future__ import annotations

from balancer.routing.rotation_log import MAX_REASONS, RotationLog, StateLine

FALL = 2
REFUSED = "probe: 127.0.0.1:1: [Errno 111] Connect call failed"
NO_STATUS = "status port: [Errno 111] Connect call failed"


def _fail(log: RotationLog, failing_for: int, reason: str) -> StateLine | None:
    return log.check(healthy=False, ok=False, failing_for=failing_for, fall=FALL, reason=reason)


def test_a_backend_that_never_comes_up_is_logged_down_once_it_has_failed_fall_checks() -> None:
    log = RotationLog()

    assert _fail(log, 1, REFUSED) is None  # (one failure at start is not yet "down")
    assert _fail(log, 2, REFUSED) == StateLine("down", "unknown")
    assert [_fail(log, n, REFUSED) for n in range(3, 100)] == [None] * 97


def test_each_new_reason_is_logged_once_even_when_two_checks_take_turns() -> None:
    log = RotationLog()
    _fail(log, 1, REFUSED)
    assert _fail(log, 2, REFUSED) == StateLine("down", "unknown")

    assert _fail(log, 3, NO_STATUS) == StateLine("down", "down")
    lines = [_fail(log, n, REFUSED if n % 2 else NO_STATUS) for n in range(4, 100)]
    assert lines == [None] * 96


def test_reasons_that_never_repeat_stop_being_logged_past_a_bound() -> None:
    log = RotationLog()
    _fail(log, FALL, "reason 0")

    lines = [_fail(log, FALL + n, f"reason {n}") for n in range(1, 1000)]

    assert sum(line is not None for line in lines) == MAX_REASONS - 1


def test_coming_up_is_logged_and_a_later_fall_logs_its_reason_afresh() -> None:
    log = RotationLog()
    _fail(log, FALL, REFUSED)

    rising = log.check(healthy=False, ok=True, failing_for=0, fall=FALL, reason="")
    up = log.check(healthy=True, ok=True, failing_for=0, fall=FALL, reason="")
    again = log.check(healthy=True, ok=True, failing_for=0, fall=FALL, reason="")
    blip = log.check(healthy=True, ok=False, failing_for=1, fall=FALL, reason=REFUSED)
    left = _fail(log, FALL, REFUSED)

    assert (rising, up, again, blip) == (None, StateLine("up", "down"), None, None)
    assert left == StateLine("down", "up")


def test_a_backend_that_comes_up_at_start_is_logged_up_from_unknown() -> None:
    log = RotationLog()

    assert log.check(healthy=True, ok=True, failing_for=0, fall=FALL, reason="") == StateLine(
        "up", "unknown"
    )
