"""What both daemons say alike of themselves, in /status and to Prometheus: which build
runs (``distlb_build_info{version,role} 1``) and how the config's last load went
(/status ``reload``; ``distlb_config_last_reload_successful`` and
``distlb_config_last_reload_success_timestamp_seconds``, the names Prometheus gives its
own). The start counts as a successful load; the reload code reports each reload
through the stats' ``reload_succeeded()`` and ``reload_failed(reason)``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import GaugeMetricFamily


@dataclass
class ReloadStatus:
    """The config's last load: when it last succeeded, and whether the latest try did
    (with the reason when it did not)."""

    last_success_at: float = field(default_factory=time.time)
    """Unix time of the last load that succeeded (the start, until a reload)."""
    successful: bool = True
    """Whether the latest load succeeded: a failed reload leaves the old config running."""
    last_attempt_at: float = 0.0
    """Unix time of the latest load, whatever its result (the start, until a reload)."""
    reason: str = ""
    """Why the latest load failed ("" when it succeeded)."""

    def __post_init__(self) -> None:
        self.last_attempt_at = self.last_attempt_at or self.last_success_at

    def succeeded(self, now: float | None = None) -> None:
        self.last_attempt_at = self.last_success_at = time.time() if now is None else now
        self.successful, self.reason = True, ""

    def failed(self, reason: str, now: float | None = None) -> None:
        self.last_attempt_at = time.time() if now is None else now
        self.successful, self.reason = False, reason

    def status(self) -> dict[str, object]:
        """/status ``reload``."""
        return {
            "successful": self.successful,
            "last_success_at": round(self.last_success_at, 3),
            "last_attempt_at": round(self.last_attempt_at, 3),
            "reason": self.reason,
        }


def self_families(role: str, version: str, reload: ReloadStatus) -> Iterator[GaugeMetricFamily]:
    """The build info and reload gauges of a daemon in ``role`` (server, balancer)."""
    info = GaugeMetricFamily(
        "distlb_build_info",
        "Always 1: the version running, and its role",
        labels=["version", "role"],
    )
    info.add_metric([version, role], 1)
    yield info
    yield GaugeMetricFamily(
        "distlb_config_last_reload_successful",
        "1 when the config's latest load (the start, or a reload) succeeded",
        value=int(reload.successful),
    )
    yield GaugeMetricFamily(
        "distlb_config_last_reload_success_timestamp_seconds",
        "Unix time of the config's last successful load (the start, or a reload)",
        value=reload.last_success_at,
    )
