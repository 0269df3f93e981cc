"""Backends: how they are named (SPEC) and what the balancer believes about each (pure).

A backend's free slots are estimated from its last report plus what this balancer has
done since: the report's busy count includes the jobs we had in flight when it was
taken, so ``others = reported_busy - ours_then`` and ``busy_now = others + ours_now``.
Health follows HAProxy: ``fall`` consecutive failures take a backend out of rotation,
``rise`` consecutive good probes bring it back.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from balancer.routing.own_connections import OwnConnections
from balancer.routing.rotation_log import RotationLog
from balancer.routing.window import SortedWindow
from cache.keys import CompilerIdentity
from client.initiator import Initiator

BackendKind = Literal["distlb", "distccd"]
DEFAULT_UNREPORTED_SLOTS = 4
LATENCY_WINDOW = 200


_COMPILER_NAME = re.compile(r"[A-Za-z0-9_.+-]{1,100}")


class SpecError(ValueError):
    """A --backend SPEC that cannot be understood."""


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """``HOST:PORT[,status=PORT][,kind=distlb|distccd][,weight=W][,slots=N][,auth[=NAME]]``."""

    host: str
    port: int
    status_port: int | None = None
    kind: BackendKind = "distlb"
    weight: float = 1.0
    slots: int | None = None
    """Slots of a backend that reports none (distccd without --stats)."""
    auth: Initiator | None = None
    """Authenticate to it (distcc's host option ``auth``, ``auth=NAME`` naming the host
    whose ``service@NAME`` principal to ask for instead of the reverse-DNS name)."""
    compilers: frozenset[str] | None = None
    """The compiler names it runs (``compilers=gcc:g++``), for a backend whose report
    does not say (distccd); None: as its report says, or any for distccd."""
    name: str = field(init=False, compare=False, repr=False, default="")  # (HOST:PORT)

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", f"{self.host}:{self.port}")

    @classmethod
    def parse(cls, text: str) -> BackendSpec:
        head, *options = [part.strip() for part in text.split(",")]
        host, sep, port_text = head.rpartition(":")
        if not sep or not host:
            raise SpecError(f"{text!r}: expected HOST:PORT")
        host = host.strip("[]")
        values: dict[str, str] = {}
        auth: Initiator | None = None
        for option in options:
            key, eq, value = option.partition("=")
            if key == "auth":
                if eq and not value:
                    raise SpecError(f"{text!r}: auth= needs a host name")
                auth = Initiator(server_name=value or None)
                continue
            if not eq or key not in ("status", "kind", "weight", "slots", "compilers"):
                raise SpecError(f"{text!r}: unknown option {option!r}")
            values[key] = value
        try:
            port = int(port_text)
            status_port = int(values["status"]) if "status" in values else None
            weight = float(values.get("weight", "1"))
            slots = int(values["slots"]) if "slots" in values else None
        except ValueError as exc:
            raise SpecError(f"{text!r}: {exc}") from exc
        kind = values.get("kind", "distlb")
        if kind not in ("distlb", "distccd"):
            raise SpecError(f"{text!r}: kind must be distlb or distccd")
        if not 0 < port < 65536 or (status_port is not None and not 0 < status_port < 65536):
            raise SpecError(f"{text!r}: port out of range")
        if weight <= 0 or (slots is not None and slots < 1):
            raise SpecError(f"{text!r}: weight and slots must be positive")
        if kind == "distlb" and status_port is None:
            status_port = port + 1  # distlb-server's default stats port is its port + 1
        compilers = None
        if "compilers" in values:
            # (":" between names: "," already separates a spec's options)
            compilers = frozenset(n for n in values["compilers"].split(":") if n)
            if not compilers or not all(_COMPILER_NAME.fullmatch(n) for n in compilers):
                raise SpecError(f"{text!r}: compilers=NAME[:NAME...] takes bare names")
        return cls(host, port, status_port, kind, weight, slots, auth, compilers)  # type: ignore[arg-type]


class Shared(Protocol):
    """A backend's counts shared with the other workers of this balancer
    (:class:`balancer.workers.shared.SharedSlot`)."""

    index: int

    def add(self, delta: int) -> None: ...
    def elsewhere(self) -> int: ...
    def lock(self) -> None: ...
    def unlock(self) -> None: ...


@dataclass(slots=True)
class BackendReport:
    slots: int
    busy: int
    accepting: bool = True
    identities: dict[str, CompilerIdentity] = field(default_factory=dict)
    """Per compiler name, what the backend runs for it (for the result cache)."""
    result_cache: bool = False
    """The backend keeps its own result cache: repeats of a job should go back to it."""
    change: str = ""
    """The report's change token (distlb servers): the next report is asked for with it."""
    compilers: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Every compiler name it runs: (its version line, the binary's digest or "")."""
    sandboxed: bool = False
    """Its report says it runs every compile sandboxed (a server's ``--sandbox bwrap``)."""
    sealed: frozenset[str] = frozenset()
    """The compiler names whose jobs it runs in a sealed sandbox (their toolchain only:
    server/sandbox/sealed.py): only those results go into the shared cache, by default."""
    holders: tuple[str, ...] | None = None
    """The connections holding its slots (distlb servers): which of ours count."""
    pump: dict[str, tuple[frozenset[str], str]] = field(default_factory=dict)
    """Per compiler it serves pump for: its system include directories, their fingerprint."""
    configured_slots: int | None = None
    """The slots a distlb server has, when ``slots`` is what it offers now (its machine is
    busy with other work or short of memory: server/machine.py)."""
    machine: dict[str, float | int | None] | None = None
    """What its machine has free, as it reports it (``foreign_load``, ``mem_available_mb``)."""


@dataclass
class Backend:
    spec: BackendSpec
    rise: int = 2
    fall: int = 2
    healthy: bool = False
    consecutive_ok: int = 0
    consecutive_fail: int = 0
    report: BackendReport | None = None
    ours_at_report: int = 0
    _in_flight: int = 0
    _probing: int = 0
    sent: int = 0
    ok: int = 0
    """Jobs it answered with an object: the reply the client got. A hedge's other copy
    that also compiled is not counted here (so the backends' ``ok`` add up to the
    balancer's), only in :attr:`good_replies`."""
    good_replies: int = 0
    """Every good compile it returned, used or not: evidence of health (stands in
    for a probe)."""
    failures: int = 0
    turned_away: int = 0
    probes: int = 0
    """Health probe compiles we sent it (not jobs: :attr:`sent` counts those)."""
    reports: int = 0
    """Reports read from it."""
    last_error: str = ""
    reports_ok: bool = False
    """Its latest report was read (a long poll answered or ran out in time)."""
    report_at: float = float("-inf")  # (when its latest report was read: monotonic)
    long_polling: bool = False  # (a report request held there now: a change answers it)
    proven_at: float = float("-inf")
    """When it last compiled well: a good probe, or jobs that finished well (monotonic
    clock; a report proves its server answers, not that its compiles do)."""
    busy_until: float = 0.0
    """After the backend turned a job away, treat it as full until its next report."""
    _latencies: SortedWindow = field(default_factory=lambda: SortedWindow(LATENCY_WINDOW))
    on_change: Callable[[Backend], None] | None = field(default=None, repr=False, compare=False)
    """Called after anything a pick depends on changed (free slots, health, speed, a
    turn-away): the pool's index (:class:`balancer.routing.roster.Roster`) keeps up from it."""
    shared: Shared | None = field(default=None, repr=False, compare=False)
    """With ``--workers``: what the other workers hold on it (counted in :attr:`ours`)."""
    rotation_log: RotationLog = field(default_factory=RotationLog, repr=False, compare=False)
    """What the log has said of its state (balancer/pool/health.py)."""
    connections: OwnConnections = field(default_factory=OwnConnections, repr=False,
                                        compare=False)  # fmt: skip
    """Our job and probe connections to it, by local address (for reports' holders)."""

    def __post_init__(self) -> None:
        # Unknown at start: the first good probe brings a backend into rotation.
        self.consecutive_ok = max(0, self.rise - 1)

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self)

    @property
    def in_flight(self) -> int:
        """Our jobs on it now."""
        return self._in_flight

    @in_flight.setter
    def in_flight(self, value: int) -> None:
        if self.shared is not None:
            self.shared.add(value - self._in_flight)
        self._in_flight = value
        self._changed()

    def reserve(self) -> bool:
        """Take a slot for a job about to be sent. Alone, always; with other workers,
        only if it is still free by the counts they share, read again under their
        common lock (so that together they never overfill it)."""
        if self.shared is None:
            self.in_flight += 1
            return True
        self.shared.lock()
        try:
            if self.free <= 0:
                self._changed()  # the index believed otherwise
                return False
            self.in_flight += 1
            return True
        finally:
            self.shared.unlock()

    def refresh(self) -> None:
        """Another worker changed what it holds here."""
        self._changed()

    @property
    def probing(self) -> int:
        """Our health probes on it now: they take a slot too, but are not jobs."""
        return self._probing

    @probing.setter
    def probing(self, value: int) -> None:
        if self.shared is not None:
            self.shared.add(value - self._probing)
        self._probing = value
        self._changed()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def slots(self) -> int:
        if self.report is not None:
            return self.report.slots
        return self.spec.slots or DEFAULT_UNREPORTED_SLOTS

    @property
    def capacity(self) -> int:
        """The slots it has, whether it offers them all now or not (a distlb server
        offers fewer while its machine is busy: the compiler majority counts these)."""
        report = self.report
        if report is not None and report.configured_slots is not None:
            return report.configured_slots
        return self.slots

    @property
    def free(self) -> int:
        """Estimated free slots now."""
        if self.report is None:
            return max(0, self.slots - self.ours)
        if not self.report.accepting:
            return 0
        return max(0, self.report.slots - self.others - self.ours)

    @property
    def others(self) -> int:
        """Slots others' jobs held at its last report (0 without one)."""
        if self.report is None:
            return 0
        return max(0, self.report.busy - self.ours_at_report)

    @property
    def ours(self) -> int:
        """What we occupy on it: jobs and probes (of every worker, with ``--workers``)."""
        if self.shared is not None:
            return self._in_flight + self._probing + self.shared.elsewhere()
        return self._in_flight + self._probing

    def identity(self, compiler: str) -> CompilerIdentity | None:
        """What this backend runs for ``compiler``, if it says (distlb servers do)."""
        return self.report.identities.get(compiler) if self.report else None

    @property
    def sandboxed(self) -> bool:
        return self.report is not None and self.report.sandboxed

    def seals(self, compiler: str) -> bool:
        """Whether its ``compiler`` jobs run sealed, so their results may be shared."""
        return self.report is not None and compiler in self.report.sealed

    @property
    def caches_results(self) -> bool:
        return self.report is not None and self.report.result_cache

    def available(self, now: float) -> bool:
        return self.healthy and self.free > 0 and now >= self.busy_until

    def on_report(self, report: BackendReport) -> None:
        self.report = report
        self.reports += 1
        self.ours_at_report = self.ours
        if report.holders is not None:
            # The server names the connections that hold its slots: ours among them are
            # exact (ours in transit either way are not), once they are seen to match.
            listed = self.connections.ours_among(report.holders)
            if self.connections.matched:
                elsewhere = self.shared.elsewhere() if self.shared is not None else 0
                self.ours_at_report = listed + elsewhere
        self.busy_until = 0.0
        self._changed()

    def on_success(self) -> None:
        """A good probe or job."""
        self.proven_at = time.monotonic()
        self.consecutive_fail = 0
        self.consecutive_ok += 1
        if not self.healthy and self.consecutive_ok >= self.rise:
            self.healthy = True
            self._changed()

    def on_failure(self, reason: str) -> None:
        """A failed probe, poll or job (not a busy turn-away)."""
        self.failures += 1
        self.last_error = reason
        self.consecutive_ok = 0
        self.consecutive_fail += 1
        if self.healthy and self.consecutive_fail >= self.fall:
            self.healthy = False
            self._changed()

    def on_turned_away(self, now: float, hold_s: float) -> None:
        self.turned_away += 1
        self.busy_until = now + hold_s
        self._changed()

    def record_latency(self, seconds: float) -> None:
        self._latencies.append(seconds)
        self._changed()

    def latency_quantile(self, q: float) -> float | None:
        return self._latencies.quantile(q)

    def latencies(self) -> list[float]:
        """The recent job latencies, oldest first."""
        return self._latencies.values()

    def snapshot(self, now: float | None = None) -> dict[str, object]:
        now = time.monotonic() if now is None else now
        p50, p95 = self.latency_quantile(0.5), self.latency_quantile(0.95)
        return {
            "name": self.name,
            "kind": self.spec.kind,
            "state": "up" if self.healthy else "down",
            "slots": self.slots,
            "free": self.free,
            "in_flight": self.in_flight,
            "probing": self.probing,
            "reported_busy": self.report.busy if self.report else None,
            "sent": self.sent,
            "probes": self.probes,
            "reports": self.reports,
            "ok": self.ok,
            "failures": self.failures,
            "turned_away": self.turned_away,
            "last_error": self.last_error,
            "p50_ms": round(p50 * 1000, 1) if p50 is not None else None,
            "p95_ms": round(p95 * 1000, 1) if p95 is not None else None,
            "weight": self.spec.weight,
        }
