"""Backends found in DNS (issue 31): ``--backends-from SRV-NAME`` (SRV records: each
target's addresses at its port, its weight) and ``--backends-from-hosts NAME:PORT[,options]``
(every A/AAAA address of NAME at PORT, with the options of a ``--backend`` spec), beside
the static ``--backend`` list.

Each source is asked again when its answer's TTL runs out, but never more often than
``--dns-min-interval`` nor less often than ``--dns-max-interval``; after a failure, at the
min interval. A failure or an empty answer keeps the source's last good set (logged,
counted, shown in /status): DNS trouble never empties the farm. What the sources say is
merged with the static list (a static spec wins for the same HOST:PORT) and given to the
pool as a reload would: a new backend is checked (probe, report) before it gets jobs; one
that is gone gets no new jobs and its jobs in flight finish. The resolution is done by
client/discovery.py (the probe's code).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from balancer.routing.backend import BackendSpec, SpecError
from client.discovery import DiscoveryError, Found, host_records, srv_records

log = structlog.get_logger("distlb.balancer.discovery")

DNS_TIMEOUT_S = 2.0
"""One query's deadline."""
ASK_TIMEOUT_S = 15.0
"""One ask's, all its queries together (an SRV set's targets not in its answer are
asked for, 16 at a time): past it, the ask failed (the last good set stays)."""
MAX_DISCOVERED = 1024
"""Backends one source may add (more: the first by name, and a warning): each is probed
and polled."""
ABSENT_ASKS = 2
"""Answers in a row a backend must be missing from before it is dropped ..."""
ABSENT_INTERVALS = 3
"""... and for this many min intervals (a DNS server that answers with a part of the set
each time, as round-robin and multi-value answers do, must not make the farm flap)."""
LOGGED = 20
"""Backends a discovery line names as added or removed, at most (the count says all)."""


@dataclass(frozen=True)
class DnsSource:
    """One ``--backends-from`` (``srv``) or ``--backends-from-hosts`` (``hosts``)."""

    kind: str
    name: str
    port: int = 0
    options: tuple[str, ...] = ()
    """Spec options for every backend it finds (``hosts`` only: ``status=``, ``kind=``...)."""

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.name}" + (f":{self.port}" if self.port else "")

    @classmethod
    def hosts(cls, text: str) -> DnsSource:
        """``NAME:PORT[,options]``; raises :class:`SpecError`."""
        head, *options = [part.strip() for part in text.split(",")]
        name, sep, port = head.rpartition(":")
        if not sep or not name or not port.isdigit() or not 0 < int(port) < 65536:
            raise SpecError(f"{text!r}: expected NAME:PORT[,options]")
        source = cls("hosts", name, int(port), tuple(o for o in options if o))
        source.spec("127.0.0.1", source.port, 0)  # (the options must make a spec)
        return source

    def spec(self, address: str, port: int, weight: int) -> BackendSpec:
        """The backend at ``address``:``port`` as a ``--backend`` spec would say it."""
        host = f"[{address}]" if ":" in address else address
        options = list(self.options)
        if weight > 0 and not any(o.startswith("weight=") for o in options):
            options.append(f"weight={weight}")
        return BackendSpec.parse(",".join([f"{host}:{port}", *options]))


@dataclass
class SourceState:
    """What one source said last, and how asking it went (for /status)."""

    specs: list[BackendSpec] = field(default_factory=list)
    servers: tuple[tuple[str, int, int, str], ...] = ()
    """The servers of its last good answer (a target that cannot be looked up next time
    keeps these)."""
    absent: dict[str, tuple[int, float]] = field(default_factory=dict)
    """Backends of the set missing from the last answers: how many in a row, since when."""
    resolved_at: float | None = None
    """When it last answered with servers (``time.time()``)."""
    failures: int = 0
    """Asks that failed or found nothing (the last good set was kept)."""
    last_error: str = ""
    next_at: float = 0.0
    """When it is asked next (``time.monotonic()``)."""

    def describe(self) -> dict[str, object]:
        return {
            "backends": len(self.specs),
            "resolved_at": self.resolved_at,
            "failures": self.failures,
            "last_error": self.last_error,
            "next_in_s": round(max(0.0, self.next_at - time.monotonic()), 1),
        }


class Discovery:
    """Asks each source in turn, for ever; tells ``changed`` when a set changed."""

    def __init__(
        self,
        sources: list[DnsSource],
        changed: Callable[[], None],
        dns_server: str | None = None,
        min_interval_s: float = 5.0,
        max_interval_s: float = 300.0,
    ) -> None:
        self.sources = sources
        self.changed = changed
        self.dns_server = dns_server
        self.min_interval_s = min_interval_s
        self.max_interval_s = max_interval_s
        self.states = {source.label: SourceState() for source in sources}
        self._tasks: list[asyncio.Task[None]] = []
        self._live = False
        """Started (by the service, once its loop runs): a reload's new sources start too."""
        self.clock: Callable[[], float] = time.monotonic
        """How long a backend has been missing from the answers is told by this."""

    def specs(self) -> dict[str, list[BackendSpec]]:
        """Per source's label, the backends it said last (good answers only)."""
        return {label: list(state.specs) for label, state in self.states.items()}

    def start(self) -> None:
        self._live = True
        self._tasks = [asyncio.create_task(self._follow(source)) for source in self.sources]

    def adopt(self, fresh: Discovery) -> None:
        """A reload's sources and settings: a source kept keeps what it said last (the
        farm is not emptied while it is asked again) and when it is asked next (a reload
        does not put it off), unless its options changed (asked at once); the tasks
        start again."""
        self.stop()
        old = {source.label: source for source in self.sources}
        kept = {label: state for label, state in self.states.items() if label in fresh.states}
        self.sources, self.dns_server = fresh.sources, fresh.dns_server
        self.min_interval_s, self.max_interval_s = fresh.min_interval_s, fresh.max_interval_s
        self.states = {label: kept.get(label, state) for label, state in fresh.states.items()}
        for source in self.sources:
            if old.get(source.label) != source:
                self.states[source.label].next_at = 0.0
        if self._live:
            self.start()

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks = []

    def close(self) -> None:
        """For good (the service stops)."""
        self._live = False
        self.stop()

    async def _follow(self, source: DnsSource) -> None:
        state = self.states[source.label]
        while True:
            await asyncio.sleep(max(0.0, state.next_at - time.monotonic()))
            if not await self._ask(source):
                continue
            try:
                self.changed()
            except Exception as exc:  # (the source is asked again all the same)
                state.failures += 1
                state.last_error = f"applying the new set: {type(exc).__name__}: {exc}"
                log.error("discovery_apply_failed", source=source.label, reason=str(exc))

    async def _ask(self, source: DnsSource) -> bool:
        """Ask ``source`` once; whether its set changed."""
        state = self.states[source.label]
        try:
            async with asyncio.timeout(ASK_TIMEOUT_S):
                found = await self._resolve(source)
        except (DiscoveryError, OSError) as exc:
            return self._failed(source, state, str(exc))
        except TimeoutError:
            return self._failed(source, state, f"no answer within {ASK_TIMEOUT_S} s")
        # A target that could not be looked up keeps its servers of the last good answer.
        servers = [*found.servers, *(s for s in state.servers if s[3] in found.failed)]
        named: dict[str, BackendSpec] = {}
        for address, port, weight, _ in servers:
            try:
                spec = source.spec(address, port, weight)
            except SpecError as exc:  # (one bad record: not the others)
                log.warning("discovery_record_skipped", source=source.label, reason=str(exc))
                continue
            named.setdefault(spec.name, spec)
        if not named:
            why = f"targets not found: {', '.join(found.failed[:5])}" if found.failed else ""
            return self._failed(source, state, why or "no servers in the answer")
        ttl = found.ttl_s if found.ttl_s is not None else self.max_interval_s
        interval = min(self.max_interval_s, max(self.min_interval_s, ttl))
        state.next_at = time.monotonic() + interval
        state.resolved_at, state.servers = time.time(), tuple(servers)
        state.last_error = f"targets not found: {', '.join(found.failed[:5])}" * bool(found.failed)
        # A backend missing from an answer stays until it has been missing from two in a
        # row for three min intervals (a DNS server that answers with a part of the set
        # each time must not make the farm flap; one gone for good leaves rotation
        # sooner anyway, as its checks fail).
        present, now_s = set(named), self.clock()
        for spec in state.specs:
            if spec.name not in present:
                count, since = state.absent.get(spec.name, (0, now_s))
                hold_s = ABSENT_INTERVALS * self.min_interval_s
                if count + 1 < ABSENT_ASKS or now_s - since < hold_s:
                    named[spec.name] = spec
                    state.absent[spec.name] = (count + 1, since)
        state.absent = {n: c for n, c in state.absent.items() if n not in present and n in named}
        specs = sorted(named.values(), key=lambda s: s.name)
        if len(specs) > MAX_DISCOVERED:
            log.warning("discovery_truncated", source=source.label, found=len(specs),
                        kept=MAX_DISCOVERED)  # fmt: skip
            specs = specs[:MAX_DISCOVERED]
        if specs == state.specs:
            return False
        now, was = {s.name for s in specs}, {s.name for s in state.specs}
        log.info("backends_discovered", source=source.label, count=len(specs),
                 added=sorted(now - was)[:LOGGED], removed=sorted(was - now)[:LOGGED],
                 ttl_s=found.ttl_s)  # fmt: skip
        state.specs = specs
        return True

    def _failed(self, source: DnsSource, state: SourceState, reason: str) -> bool:
        state.failures += 1
        state.last_error = reason
        state.next_at = time.monotonic() + self.min_interval_s
        log.warning("discovery_failed", source=source.label, reason=reason,
                    kept=len(state.specs))  # fmt: skip
        return False

    async def _resolve(self, source: DnsSource) -> Found:
        if source.kind == "srv":
            return await srv_records(source.name, dns_server=self.dns_server,
                                     timeout_s=DNS_TIMEOUT_S)  # fmt: skip
        return await host_records(source.name, source.port, dns_server=self.dns_server,
                                  timeout_s=DNS_TIMEOUT_S)  # fmt: skip

    def describe(self) -> dict[str, dict[str, object]]:
        return {label: state.describe() for label, state in self.states.items()}
