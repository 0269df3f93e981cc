"""Which of a backend's check results the balancer logs (pure; balancer/pool/health.py logs
what it says as ``backend_state``).

A backend that comes into rotation is logged ``up``; one that leaves it, ``down`` with
the reason. One that has never been up (unknown at start or after a reload) is logged
``down`` once it has failed as many checks in a row as would take a healthy one out
(``fall``). While it stays out, each new reason it fails for is logged once, so an
operator learns why it stays down without a line per probe: the probe and the report
poll failing in turn, for their two reasons, make two lines, not one a second.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

MAX_REASONS = 16
"""Distinct reasons logged in one spell out of rotation; more are not (a reason that
names something that changes every time must not flood the log)."""

State = Literal["unknown", "up", "down"]


@dataclass(frozen=True)
class StateLine:
    """One ``backend_state`` line to log."""

    state: Literal["up", "down"]
    was: State
    """What the log said of it before: ``unknown`` (never up), ``up`` (it left rotation),
    ``down`` (still out, for a new reason)."""


@dataclass
class RotationLog:
    """What has been logged of one backend's state since it was added."""

    state: State = "unknown"
    reasons: set[str] = field(default_factory=set)
    """The reasons logged since it last went down."""

    def check(
        self, healthy: bool, ok: bool, failing_for: int, fall: int, reason: str
    ) -> StateLine | None:
        """After a check: ``healthy`` as it stands now, ``ok`` the check's result,
        ``failing_for`` the failures in a row, ``reason`` the failure's. Returns the
        line to log, or None."""
        was = self.state
        if healthy:
            if was == "up":
                return None
            self.state, self.reasons = "up", set()
            return StateLine("up", was)
        if ok:
            return None  # (rising: not up yet)
        if was == "down":
            if reason in self.reasons or len(self.reasons) >= MAX_REASONS:
                return None
            self.reasons.add(reason)
            return StateLine("down", was)
        if was == "unknown" and failing_for < fall:
            return None
        self.state, self.reasons = "down", {reason}
        return StateLine("down", was)
