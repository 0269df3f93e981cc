"""The backend pool: polls each backend's report, probes its health, wakes waiting jobs.

distlb servers are read from ``/status`` on their status port, real distccd from
its ``--stats`` page; every backend gets a trivial compile as a health probe.
Reports and probes feed :class:`balancer.backends.Backend`; the decisions stay there.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import structlog

from balancer.backends import Backend, BackendSpec, Report
from balancer.roster import Roster
from cache.keys import CompilerIdentity
from client import ClientError, TurnedAway, compile_remote
from client.prober import probe_request
from client.status import ReportError, fetch_report

log = structlog.get_logger("distlb.balancer.pool")


@dataclass(frozen=True)
class PoolSettings:
    poll_interval_s: float = 0.5
    probe_interval_s: float = 1.0
    probe_timeout_s: float = 1.0
    rise: int = 2
    fall: int = 2
    probe_compiler: str = "gcc"
    fast_poll_interval_s: float = 0.1
    """Report polling while jobs wait for a slot (HAProxy's ``fastinter`` in spirit)."""
    report_wait_s: float = 5.0
    """How long a distlb server may hold a report request until its state changes
    enough (a long poll); 0: ask every poll interval."""
    idle_probe_interval_s: float = 30.0
    """Compile probes of a healthy backend whose reports keep coming: this often
    instead of every ``probe_interval_s`` (jobs that finish well count as probes)."""


DEMAND_HOLD_S = 1.0
"""Fast polling lasts this long after the last job that had to wait for a slot."""


def poll_delay(settings: PoolSettings, now: float, demand_until: float) -> float:
    """Seconds until a backend's next report is read: soon while jobs wait for a slot
    (another balancer's finished jobs free slots we only learn of from reports),
    at the normal pace otherwise."""
    if now < demand_until:
        return min(settings.fast_poll_interval_s, settings.poll_interval_s)
    return settings.poll_interval_s


async def fetch_backend_report(
    spec: BackendSpec, timeout_s: float, since: str = "", wait_s: float = 0.0
) -> Report:
    """Read one backend's report (raises :class:`ReportError`); with ``since`` and
    ``wait_s``, once it has changed enough since that report or after ``wait_s``."""
    assert spec.status_port is not None
    report = await fetch_report(
        spec.host, spec.status_port, spec.kind, timeout_s + wait_s, since, wait_s
    )
    identities = {
        name: CompilerIdentity(info.get("version", ""), info.get("digest", ""))
        for name, info in report.compilers.items()
        if info.get("digest") and info.get("digest") != "unknown"
    }
    return Report(
        report.slots, report.busy, report.accepting, identities, report.result_cache, report.change
    )


class Pool:
    """All backends, their watchers, and a condition jobs wait on for capacity."""

    def __init__(self, specs: Iterable[BackendSpec], settings: PoolSettings) -> None:
        self.settings = settings
        self.roster = Roster()
        """The backends indexed for picking, kept up through each one's ``on_change``."""
        self._backends: dict[str, Backend] = {}
        self._tasks: dict[str, list[asyncio.Task[None]]] = {}
        self._waiters: dict[int, tuple[float, asyncio.Future[None]]] = {}
        """Jobs waiting for a change: by arrival order, since when each waits and its
        future."""
        self._order = itertools.count()
        self._listeners: list[Callable[[], None]] = []
        self._down_listeners: list[Callable[[Backend], None]] = []
        self._demand_until = 0.0
        self._demand_began: asyncio.Future[None] | None = None
        """Done when jobs begin to wait for a slot: poll loops in a long sleep wake."""
        self._specs = list(specs)

    @property
    def backends(self) -> dict[str, Backend]:
        """By name (assign a new dict to replace them all; do not change it in place)."""
        return self._backends

    @backends.setter
    def backends(self, backends: dict[str, Backend]) -> None:
        self._backends = backends
        for backend in backends.values():
            backend.on_change = self.roster.changed
        self.roster.rebuild(backends.values())

    def start(self) -> None:
        self.reload(self._specs)

    def reload(self, specs: Iterable[BackendSpec]) -> None:
        """Adopt a new backend list: new ones start unknown, kept ones keep their state,
        removed ones stop being picked (their jobs in flight finish normally)."""
        wanted = {spec.name: spec for spec in specs}
        backends = dict(self._backends)
        for name in list(backends):
            if name not in wanted:
                for task in self._tasks.pop(name, []):
                    task.cancel()
                backends.pop(name).on_change = None
                log.info("backend_removed", backend=name)
        for name, spec in wanted.items():
            backend = backends.get(name)
            if backend is not None and backend.spec == spec:
                continue
            if backend is not None:
                backend.on_change = None
                for task in self._tasks.pop(name, []):
                    task.cancel()
            backend = Backend(spec, rise=self.settings.rise, fall=self.settings.fall)
            backends[name] = backend
            tasks = [asyncio.create_task(self._probe_loop(backend))]
            if spec.status_port is not None:
                tasks.append(asyncio.create_task(self._poll_loop(backend)))
            self._tasks[name] = tasks
            log.info("backend_added", backend=name, kind=spec.kind, status_port=spec.status_port)
        self.backends = backends
        self.notify()

    async def stop(self) -> None:
        tasks = [t for group in self._tasks.values() for t in group]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    def notify(self) -> None:
        """Something changed that may free capacity: wake every waiting job, those
        waiting longest first (they run, and pick, in that order), and tell the
        listeners."""
        waiters, self._waiters = self._waiters, {}
        for _, (_, future) in sorted(waiters.items(), key=lambda item: (item[1][0], item[0])):
            if not future.done():
                future.set_result(None)
        for listener in self._listeners:
            listener()

    def demand(self) -> None:
        """A job is waiting for a free slot: read the backends' reports more often (and
        at once, when the waiting begins: a poll loop may be in a long sleep)."""
        now = time.monotonic()
        if now >= self._demand_until:
            began, self._demand_began = self._demand_began, None
            if began is not None and not began.done():
                began.set_result(None)
        self._demand_until = now + DEMAND_HOLD_S

    def _demand_future(self) -> asyncio.Future[None]:
        if self._demand_began is None:
            self._demand_began = asyncio.get_running_loop().create_future()
        return self._demand_began

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (synchronously, so it must be quick) on every change."""
        self._listeners.append(listener)

    def add_down_listener(self, listener: Callable[[Backend], None]) -> None:
        """Call ``listener(backend)`` (synchronously) when a backend leaves rotation."""
        self._down_listeners.append(listener)

    async def wait_for_change(self, timeout_s: float, since: float | None = None) -> None:
        """Until the next :meth:`notify` or ``timeout_s``. ``since``: when the caller
        began to wait for a slot (default now); the longest waiting are woken first, so
        a job that a full backend turned away keeps its place in the queue."""
        order = next(self._order)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[order] = (time.monotonic() if since is None else since, future)
        try:
            # asyncio.wait, not wait_for: on Python 3.11, wait_for swallows a cancel that
            # comes as the future completes, and a cancelled job would go on waiting.
            await asyncio.wait((future,), timeout=timeout_s)
        finally:
            if not future.done():  # timed out, or we were cancelled
                future.cancel()
                self._waiters.pop(order, None)

    def all_down(self) -> bool:
        """No backend is in rotation and each failed its latest check: nothing to wait
        for. (Backends not yet checked, at start or after a reload, may come up.)"""
        return all(not b.healthy and b.consecutive_fail > 0 for b in self.backends.values())

    def healthy_count(self) -> int:
        return sum(1 for b in self.backends.values() if b.healthy)

    def mark_failure(self, backend: Backend, reason: str) -> None:
        """A job's attempt on ``backend`` failed in a way that counts against its health
        (an error, or it missed its deadline)."""
        self._mark(backend, False, reason)

    def _mark(self, backend: Backend, ok: bool, reason: str = "") -> None:
        was = backend.healthy
        if ok:
            backend.on_success()
        else:
            backend.on_failure(reason)
        if backend.healthy != was:
            emit = log.info if backend.healthy else log.warning
            emit(
                "backend_state",
                backend=backend.name,
                state="up" if backend.healthy else "down",
                reason=reason or "probes ok",
            )
            if not backend.healthy:
                for listener in self._down_listeners:
                    listener(backend)
            self.notify()

    async def _poll_loop(self, backend: Backend) -> None:
        """Read the backend's report, again and again. A distlb server holds each request
        until its state has changed enough (or ``report_wait_s``), so an idle farm
        costs a request per backend every few seconds, and a change comes at once;
        between two requests lies at least the poll delay."""
        settings = self.settings
        while True:
            since = backend.report.change if backend.report and backend.reports_ok else ""
            wait_s = settings.report_wait_s if since else 0.0
            try:
                report = await fetch_backend_report(
                    backend.spec, settings.probe_timeout_s, since, wait_s
                )
            except ReportError as exc:
                backend.reports_ok = False
                self._mark(backend, False, str(exc))
            else:
                backend.reports_ok = True
                backend.on_report(report)
                self.notify()
            delay = poll_delay(settings, time.monotonic(), self._demand_until)
            await asyncio.wait((self._demand_future(),), timeout=delay)

    async def _probe_loop(self, backend: Backend) -> None:
        request = probe_request(self.settings.probe_compiler)
        deadline = self.settings.probe_timeout_s
        ok_seen = backend.ok
        proven_at = float("-inf")  # when a probe or a job last showed it compiles
        sent_seen = backend.sent
        while True:
            started = time.monotonic()
            if backend.healthy and backend.ok > ok_seen:
                # Jobs finished well since the last check: they are the probe. A compile
                # probe costs the backend a real compile (per balancer, every interval);
                # a backend that hangs or fails stops finishing jobs, and probing resumes.
                ok_seen, sent_seen = backend.ok, backend.sent
                proven_at = started
                self._mark(backend, True)
                await asyncio.sleep(self.settings.probe_interval_s)
                continue
            ok_seen = backend.ok
            if (
                backend.healthy
                and backend.reports_ok
                and backend.sent == sent_seen
                and started - proven_at < self.settings.idle_probe_interval_s
            ):
                # Idle (no job sent since it last proved it compiles) and its reports
                # keep coming (a server that dies drops its held report request; one
                # that hangs lets it run out): probe it now and then only. Jobs sent
                # that do not finish well bring the probes back at once.
                await asyncio.sleep(self.settings.probe_interval_s)
                continue
            sent_seen = backend.sent
            if backend.healthy and backend.in_flight > 0 and backend.free == 0:
                # Busy is not dead: every slot holds a job (ours, or others' by its
                # report), so a probe would wait behind them (distccd queues it) or be
                # turned away. Such a backend is judged by its status answers and its
                # jobs' deadlines instead.
                await asyncio.sleep(self.settings.probe_interval_s)
                continue
            full_at_start = backend.free == 0
            # A probe takes a slot on the backend like any job: count it, or jobs
            # sent meanwhile find the backend fuller than we think and are turned away.
            backend.probing += 1
            try:
                async with asyncio.timeout(deadline):  # the whole probe, connect included
                    reply = await compile_remote(
                        backend.spec.host,
                        backend.spec.port,
                        request,
                        connect_timeout_s=deadline,
                        timeout_s=deadline,
                        auth=backend.spec.auth,  # probes authenticate like jobs
                    )
            except TimeoutError:
                if full_at_start or backend.free == 0:
                    log.debug("probe_late_while_full", backend=backend.name)
                else:
                    self._mark(backend, False, f"probe: no reply within {deadline} s")
            except TurnedAway:
                pass  # busy is not sick: neither rise nor fall
            except ClientError as exc:
                self._mark(backend, False, f"probe: {exc}")
            else:
                if reply.status == 0 and reply.obj:
                    proven_at = time.monotonic()
                    self._mark(backend, True)
                else:
                    self._mark(backend, False, f"probe compile failed: {reply.stderr[:200]!r}")
            finally:
                backend.probing -= 1
                self.notify()
            elapsed = time.monotonic() - started
            await asyncio.sleep(max(0.0, self.settings.probe_interval_s - elapsed))
