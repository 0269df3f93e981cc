"""Health: reading each backend's report and probing it, and what a check's result
does (HAProxy's rise and fall). The pool (balancer/pool/pool.py) runs one report loop and one
probe loop per backend; the decisions about a backend's state are in
balancer/routing/backend.py.

distlb servers are read from ``/status`` on their status port as a long poll, real
distccd from its ``--stats`` page; every backend gets a trivial compile as a probe,
skipped while jobs on it finish well and, for an idle backend whose reports keep
coming, run only every ``idle_probe_interval_s``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

import structlog

from balancer.routing.backend import Backend, BackendReport, BackendSpec
from balancer.routing.compilers import CompilerRouting, version_in_object
from balancer.routing.own_connections import OpenedOn
from balancer.settings import PoolSettings
from cache.keys import CompilerIdentity
from client import ClientError, TurnedAway, compile_remote
from client.prober import probe_request
from client.status import ReportError, expecting, fetch_report
from daemon.changes import Changes

log = structlog.get_logger("distlb.balancer.health")


class Watched(Protocol):
    """What the checks need of the pool that runs them (balancer/pool/pool.py): its
    settings and compiler routing, and these calls; nothing else of it."""

    settings: PoolSettings
    routing: CompilerRouting
    demand_began: Changes
    """Notified when jobs begin to wait for a slot."""

    @property
    def demand_until(self) -> float:
        """Until when (monotonic) reports are read at the fast pace: jobs wait."""
        ...

    def notify(self) -> None:
        """Something changed that may free capacity."""

    def tell_state(self, backend: str, state: str, reason: str) -> None:
        """A backend left or rejoined rotation."""

    def went_down(self, backend: Backend) -> None:
        """``backend`` left rotation (its jobs are rescued)."""

    def stale_future(self, backend: Backend) -> asyncio.Future[None]: ...

    def report_stale(self, backend: Backend) -> None: ...

    def idle_poll_waker(self, backend: Backend) -> asyncio.Future[None]: ...

    def idle_poll_over(self, backend: Backend) -> None: ...


def poll_delay(settings: PoolSettings, now: float, demand_until: float) -> float:
    """Seconds until a backend's next report is read: soon while jobs wait for a slot
    (another balancer's finished jobs free slots we only learn of from reports),
    at the normal pace otherwise."""
    if now < demand_until:
        return min(settings.fast_poll_interval_s, settings.poll_interval_s)
    return settings.poll_interval_s


async def fetch_backend_report(
    spec: BackendSpec, timeout_s: float, since: str = "", wait_s: float = 0.0
) -> BackendReport:
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
    compilers = {
        name: (str(info.get("version", "")), str(info.get("digest", "")))
        for name, info in report.compilers.items()
    }
    return BackendReport(
        report.slots, report.busy, report.accepting, identities, report.result_cache,
        report.change, compilers, sandboxed=report.sandboxed, holders=report.holders,
        configured_slots=report.configured_slots, machine=report.machine,
        sealed=frozenset(n for n, info in report.compilers.items()
                         if info.get("sandbox") == "sealed"),
        pump={n: (frozenset(d for d in info["pump"].split("\n") if d.startswith("/")),
                  str(info.get("pump_headers", "")))
              for n, info in report.compilers.items() if isinstance(info.get("pump"), str)},
    )  # fmt: skip


def mark(pool: Watched, backend: Backend, ok: bool, reason: str = "") -> None:
    """A check's result: rise and fall; a change of state tells the down listeners (a
    backend left rotation) and wakes waiting jobs. Logged as ``backend_state``: each
    change of state, and a backend out of rotation (or never up) once per reason it
    fails for (balancer/routing/rotation_log.py)."""
    was = backend.healthy
    if ok:
        backend.on_success()
    else:
        backend.on_failure(reason)
    line = backend.rotation_log.check(
        backend.healthy, ok, backend.consecutive_fail, backend.fall, reason
    )
    if line is not None:
        emit = log.info if line.state == "up" else log.warning
        emit("backend_state", backend=backend.name, state=line.state, was=line.was,
             reason=reason or "probes ok")  # fmt: skip
    if backend.healthy != was:
        pool.routing.changed()  # (the majority identity counts slots in rotation)
        pool.tell_state(backend.name, "up" if backend.healthy else "down", reason or "probes ok")
        if not backend.healthy:
            pool.went_down(backend)
        pool.notify()


async def poll_loop(pool: Watched, backend: Backend) -> None:
    """Read the backend's report, again and again. A distlb server holds each request
    until its state has changed enough (or ``report_wait_s``), so an idle farm
    costs a request per backend every few seconds, and a change comes at once;
    between two requests lies at least the poll delay."""
    settings = pool.settings
    while True:
        report = backend.report
        since = ""
        if report is not None and backend.reports_ok and report.change:
            # What we believe it runs now: others' jobs as of the report, and ours now.
            since = expecting(report.change, backend.others + backend.ours)
        wait_s = settings.report_wait_s if since else 0.0
        if backend.in_flight:
            # Our jobs run there: a server that hangs must be seen as soon as plain
            # polls would see it (its jobs are rescued once it leaves rotation).
            wait_s = min(wait_s, settings.poll_interval_s)
        fetch = asyncio.ensure_future(
            fetch_backend_report(backend.spec, settings.probe_timeout_s, since, wait_s)
        )
        # A long poll gives way when a turn-away says the report is wrong; a plain
        # request is answered at once anyway.
        waits = (fetch, pool.stale_future(backend)) if wait_s else (fetch,)
        backend.long_polling = bool(wait_s)
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            backend.long_polling = False
            if not fetch.done():
                fetch.cancel()
        if not fetch.done() or fetch.cancelled():
            # A turn-away says our picture of it is wrong (the report counted a job of
            # ours that never held a slot there, or another balancer's): ask afresh
            # now, rather than wait for a change the server would not call one.
            await asyncio.gather(fetch, return_exceptions=True)
            backend.reports_ok = False
            continue
        try:
            report = fetch.result()
        except ReportError as exc:
            backend.reports_ok = False
            mark(pool, backend, False, str(exc))
        else:
            backend.reports_ok = True
            before = backend.report
            backend.on_report(report)
            backend.report_at = time.monotonic()
            if before is None or before.compilers != report.compilers:
                pool.routing.reported(backend.name)
            pool.notify()
        now = time.monotonic()
        long_polls = bool(settings.report_wait_s and backend.reports_ok
                          and backend.report is not None and backend.report.change)  # fmt: skip
        if (
            not long_polls
            and backend.healthy
            and not backend.ours
            and now >= pool.demand_until
            and settings.idle_poll_interval_s > settings.poll_interval_s
        ):
            # Plain polls of a backend we send nothing to, while nothing waits: at the
            # idle pace (200 such backends cost 4 % of a core at the normal one); a
            # job sent there, or one that waits, ends the sleep.
            try:
                await asyncio.wait((pool.demand_began.next(), pool.idle_poll_waker(backend)),
                                   timeout=settings.idle_poll_interval_s,
                                   return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            finally:
                pool.idle_poll_over(backend)
            continue
        delay = poll_delay(settings, now, pool.demand_until)
        await asyncio.wait((pool.demand_began.next(),), timeout=delay)


async def probe_loop(pool: Watched, backend: Backend) -> None:
    request = probe_request(pool.settings.probe_compiler)
    deadline = pool.settings.probe_timeout_s
    ok_seen = backend.good_replies
    proven_at = float("-inf")  # when a probe or a job last showed it compiles
    sent_seen = backend.sent
    while True:
        started = time.monotonic()
        if backend.healthy and backend.good_replies > ok_seen:
            # Jobs finished well since the last check: they are the probe. A compile
            # probe costs the backend a real compile (per balancer, every interval);
            # a backend that hangs or fails stops finishing jobs, and probing resumes.
            ok_seen, sent_seen = backend.good_replies, backend.sent
            proven_at = started
            mark(pool, backend, True)
            await asyncio.sleep(pool.settings.probe_interval_s)
            continue
        ok_seen = backend.good_replies
        if (
            backend.healthy
            and backend.reports_ok
            and backend.sent == sent_seen
            and started - proven_at < pool.settings.idle_probe_interval_s
        ):
            # Idle (no job sent since it last proved it compiles) and its reports
            # keep coming (a server that dies drops its held report request; one
            # that hangs lets it run out): probe it now and then only. Jobs sent
            # that do not finish well bring the probes back at once.
            await asyncio.sleep(pool.settings.probe_interval_s)
            continue
        sent_seen = backend.sent
        if backend.healthy and backend.ours > 0 and backend.free == 0:
            # Busy is not dead: every slot holds a job (ours, our other workers', or
            # others' by its report), so a probe would wait behind them (distccd
            # queues it) or be turned away. Such a backend is judged by its status
            # answers and its jobs' deadlines instead.
            await asyncio.sleep(pool.settings.probe_interval_s)
            continue
        full_at_start = backend.free == 0
        # A probe takes a slot on the backend like any job: count it, or jobs
        # sent meanwhile find the backend fuller than we think and are turned away.
        backend.probing += 1
        backend.probes += 1
        opened = OpenedOn(backend.connections)
        try:
            async with asyncio.timeout(deadline):  # the whole probe, connect included
                reply = await compile_remote(
                    backend.spec.host,
                    backend.spec.port,
                    request,
                    connect_timeout_s=deadline,
                    timeout_s=deadline,
                    auth=backend.spec.auth,  # probes authenticate like jobs
                    on_connected=opened,
                )
        except TimeoutError:
            if full_at_start or backend.free == 0:
                log.debug("probe_late_while_full", backend=backend.name)
            else:
                mark(pool, backend, False, f"probe: no reply within {deadline} s")
        except TurnedAway:
            pool.report_stale(backend)  # busy is not sick: neither rise nor fall
        except ClientError as exc:
            mark(pool, backend, False, f"probe: {exc}")
        else:
            if reply.status == 0 and reply.obj:
                proven_at = time.monotonic()
                pool.routing.compiled[backend.name].add(pool.settings.probe_compiler)
                if backend.report is None or not backend.report.compilers:
                    # (a distccd says nothing of its compilers: its object says which
                    # version compiled it)
                    pool.routing.probed_version(
                        backend.name, pool.settings.probe_compiler, version_in_object(reply.obj)
                    )
                mark(pool, backend, True)
            else:
                mark(pool, backend, False, f"probe compile failed: {reply.stderr[:200]!r}")
        finally:
            opened.close()
            backend.probing -= 1
            pool.notify()
        elapsed = time.monotonic() - started
        await asyncio.sleep(max(0.0, pool.settings.probe_interval_s - elapsed))
