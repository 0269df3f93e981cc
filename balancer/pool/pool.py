"""The backend pool: the backends (reloaded on SIGHUP), their index for picking
(balancer/routing/roster.py), and per backend a report loop and a probe loop
(balancer/pool/health.py). It tells its listeners of every change that may free
capacity; the jobs that wait for a slot are the dispatcher's (balancer/routing/queue.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterable

import structlog

from balancer.pool import health
from balancer.pool.health import fetch_backend_report, poll_delay
from balancer.routing.backend import Backend, BackendSpec
from balancer.routing.compilers import CompilerRouting
from balancer.routing.roster import Roster
from balancer.settings import PoolSettings
from balancer.workers.shared import SharedCounts, SharedCountsFull
from daemon.changes import Changes

log = structlog.get_logger("distlb.balancer.pool")


__all__ = ["DEMAND_HOLD_S", "Pool", "fetch_backend_report", "poll_delay"]

DEMAND_HOLD_S = 1.0
"""Fast polling lasts this long after the last job that had to wait for a slot."""


class Pool:
    """All backends, their watchers, and a condition jobs wait on for capacity."""

    def __init__(self, specs: Iterable[BackendSpec], settings: PoolSettings) -> None:
        self.settings = settings
        self.roster = Roster()
        """The backends indexed for picking, kept up through each one's ``on_change``."""
        self._backends: dict[str, Backend] = {}
        self._tasks: dict[str, list[asyncio.Task[None]]] = {}
        self._listeners: list[Callable[[], None]] = []
        self._down_listeners: list[Callable[[Backend], None]] = []
        self.state_listeners: list[Callable[[str, str, str], None]] = []
        self._demand_until = 0.0
        self._stale: dict[str, Changes] = {}
        self._idle_polls: dict[str, asyncio.Future[None]] = {}
        """Report loops polling at the idle pace, by backend: woken when a job goes there."""
        """Per backend, notified when its latest report is known to be wrong (a turn-away)."""
        self.demand_began = Changes()
        """Notified when jobs begin to wait for a slot: poll loops in a long sleep wake."""
        self._specs = list(specs)
        self.shared: SharedCounts | None = None
        self.sources: dict[str, str] = {}
        """Where each backend came from, when not from --backend: a DNS source's label."""
        """With ``--workers``: the counts this worker shares with the others (set
        before :meth:`start`)."""
        self._by_entry: dict[int, Backend] = {}
        self.routing = CompilerRouting()
        """Which backends each compiler name may go to (balancer/routing/compilers.py)."""

    @property
    def backends(self) -> dict[str, Backend]:
        """By name (assign a new dict to replace them all; do not change it in place)."""
        return self._backends

    @backends.setter
    def backends(self, backends: dict[str, Backend]) -> None:
        self._backends = backends
        self._by_entry = {}
        for backend in backends.values():
            backend.on_change = self._backend_changed
            if backend.shared is not None:
                self._by_entry[backend.shared.index] = backend
        self.roster.rebuild(backends.values())

    def start(self) -> None:
        if self.shared is not None:
            asyncio.get_running_loop().add_reader(self.shared.changes_fd, self._others_changed)
        self.reload(self._specs)

    def _watchers(self, backend: Backend) -> list[asyncio.Task[None]]:
        """A backend's probe loop, and its report loop where it has a status port."""
        tasks = [asyncio.create_task(self._probe_loop(backend))]
        if backend.spec.status_port is not None:
            tasks.append(asyncio.create_task(self._poll_loop(backend)))
        for task in tasks:
            task.add_done_callback(_ended)
        return tasks

    def _others_changed(self) -> None:
        """Other workers took or gave back slots: refresh those backends, wake the
        waiting jobs (through the listeners)."""
        assert self.shared is not None
        for entry in self.shared.read_changes():
            backend = self._by_entry.get(entry)
            if backend is not None:
                backend.refresh()
        self.notify()

    def apply_settings(self, settings: PoolSettings) -> None:
        """A reload's settings: the watchers read them at their next step; each backend
        takes the new rise and fall."""
        self.settings = settings
        for backend in self._backends.values():
            backend.rise, backend.fall = settings.rise, settings.fall
        self.notify()

    def reload(self, specs: Iterable[BackendSpec]) -> None:
        """Adopt a new backend list: new ones start unknown, kept ones keep their state,
        removed ones stop being picked (their jobs in flight finish normally). A kept
        backend whose options changed (weight, slots, compilers, status port, auth)
        takes them in place, with its history: its watchers start again only when what
        they watch changed (the status port, the kind, authentication)."""
        wanted = {spec.name: spec for spec in specs}
        backends = dict(self._backends)
        for name in list(backends):
            if name not in wanted:
                for task in self._tasks.pop(name, []):
                    task.cancel()
                backends.pop(name).on_change = None
                log.info("backend_removed", backend=name)
                self.tell_state(name, "removed", "reload")
        for name, spec in wanted.items():
            backend = backends.get(name)
            if backend is not None and backend.spec == spec:
                continue
            if backend is not None:
                old, backend.spec = backend.spec, spec
                log.info("backend_updated", backend=name, options=_changed_options(old, spec))
                if backend.on_change is not None:
                    backend.on_change(backend)  # (weight, slots: the index reads them again)
                watched = ("status_port", "kind", "auth")
                if all(getattr(old, key) == getattr(spec, key) for key in watched):
                    continue
                for task in self._tasks.pop(name, []):
                    task.cancel()
                self._tasks[name] = self._watchers(backend)
                continue
            backend = Backend(spec, rise=self.settings.rise, fall=self.settings.fall)
            if self.shared is not None:
                try:
                    backend.shared = self.shared.slot(name)
                except SharedCountsFull as exc:
                    # (more names in the balancer's life than the table holds: DNS
                    # churn; this one's slots are counted by this worker alone)
                    log.warning("backend_not_shared", backend=name, reason=str(exc))
            backends[name] = backend
            self._tasks[name] = self._watchers(backend)
            log.info("backend_added", backend=name, kind=spec.kind, status_port=spec.status_port)
            self.tell_state(name, "added", "configured")
        self.backends = backends
        self.routing.changed()
        self.notify()

    async def stop(self) -> None:
        if self.shared is not None:
            asyncio.get_running_loop().remove_reader(self.shared.changes_fd)
        tasks = [t for group in self._tasks.values() for t in group]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    def notify(self) -> None:
        """Something changed that may free capacity: tell the listeners (the dispatcher's
        queue wakes its waiting jobs, longest waiting first)."""
        for listener in self._listeners:
            listener()

    def demand(self) -> None:
        """A job is waiting for a free slot: read the backends' reports more often (and
        at once, when the waiting begins: a poll loop may be in a long sleep)."""
        now = time.monotonic()
        if now >= self._demand_until:
            self.demand_began.notify()
        self._demand_until = now + DEMAND_HOLD_S
        self.want_changes(DEMAND_HOLD_S)

    def want_changes(self, for_s: float) -> None:
        """With ``--workers``: jobs here wait for a slot, or hold back for a backend, so
        the other workers tell this one of each slot they give back, for ``for_s``."""
        if self.shared is not None:
            self.shared.want_changes(time.monotonic() + for_s)

    def _backend_changed(self, backend: Backend) -> None:
        self.roster.changed(backend)
        if self._idle_polls and backend.name in self._idle_polls and backend.ours:
            waker = self._idle_polls.pop(backend.name)
            if not waker.done():
                waker.set_result(None)

    def idle_poll_waker(self, backend: Backend) -> asyncio.Future[None]:
        """Done once a job or probe of ours goes to ``backend`` (its report loop polls
        at the idle pace meanwhile)."""
        waker = asyncio.get_running_loop().create_future()
        self._idle_polls[backend.name] = waker
        return waker

    def idle_poll_over(self, backend: Backend) -> None:
        waker = self._idle_polls.pop(backend.name, None)
        if waker is not None:
            waker.cancel()

    def stale_future(self, backend: Backend) -> asyncio.Future[None]:
        """Done once :meth:`report_stale` is called for ``backend``."""
        return self._stale.setdefault(backend.name, Changes()).next()

    def report_stale(self, backend: Backend) -> None:
        """``backend`` turned a job or probe of ours away: its report loop asks again now
        instead of waiting out a long poll."""
        backend.reports_ok = False  # the next request asks afresh (no long poll)
        stale = self._stale.get(backend.name)
        if stale is not None:
            stale.notify()

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (synchronously, so it must be quick) on every change."""
        self._listeners.append(listener)

    def add_state_listener(self, listener: Callable[[str, str, str], None]) -> None:
        """Call ``listener(backend, state, reason)`` (synchronously) when a backend
        leaves or rejoins rotation, or a reload adds or removes it."""
        self.state_listeners.append(listener)

    def tell_state(self, backend: str, state: str, reason: str) -> None:
        for listener in self.state_listeners:
            listener(backend, state, reason)

    def add_down_listener(self, listener: Callable[[Backend], None]) -> None:
        """Call ``listener(backend)`` (synchronously) when a backend leaves rotation."""
        self._down_listeners.append(listener)

    def went_down(self, backend: Backend) -> None:
        for listener in self._down_listeners:
            listener(backend)

    @property
    def demand_until(self) -> float:
        """Until when (monotonic) jobs wait for a slot (reports are read fast)."""
        return self._demand_until

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
        health.mark(self, backend, ok, reason)

    async def _poll_loop(self, backend: Backend) -> None:
        await health.poll_loop(self, backend)

    async def _probe_loop(self, backend: Backend) -> None:
        await health.probe_loop(self, backend)


def _changed_options(old: BackendSpec, new: BackendSpec) -> list[str]:
    """The options of one backend that a reload changed, by name."""
    return [f.name for f in dataclasses.fields(old) if getattr(old, f.name) != getattr(new, f.name)]


def _ended(task: asyncio.Task[None]) -> None:
    """A watcher ended: cancelled (its backend removed, the pool stopped) or by an error,
    logged here once rather than as a "never retrieved" traceback."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("backend_watcher_failed", error=type(exc).__name__, reason=str(exc))
