"""The backend pool: polls each backend's report, probes its health, wakes waiting jobs.

distlb servers are read from ``/status`` on their status port, real distccd from
its ``--stats`` page; every backend gets a trivial compile as a health probe.
Reports and probes feed :class:`balancer.backends.Backend`; the decisions stay there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass

import structlog

from balancer.backends import Backend, BackendSpec, Report
from client import ClientError, TurnedAway, compile_remote
from wire import Request

log = structlog.get_logger("distlb.balancer.pool")

PROBE_SOURCE = b"int distlb_probe(void) { return 42; }\n"
MAX_REPORT_BYTES = 64 * 1024


@dataclass(frozen=True)
class PoolSettings:
    poll_interval_s: float = 0.5
    probe_interval_s: float = 1.0
    probe_timeout_s: float = 1.0
    rise: int = 2
    fall: int = 2
    probe_compiler: str = "gcc"


class ReportError(Exception):
    """A backend's report could not be read or understood."""


def probe_request(compiler: str) -> Request:
    return Request(1, (compiler, "-c", "distlb-probe.c", "-o", "distlb-probe.o"), PROBE_SOURCE)


def parse_distlb_status(body: bytes) -> Report:
    try:
        data = json.loads(body)
        return Report(
            slots=int(data["slots"]),
            busy=int(data["busy"]),
            accepting=bool(data.get("accepting", True)),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ReportError(f"bad /status: {exc}") from exc


def parse_distccd_stats(body: bytes) -> Report:
    """Slots from ``dcc_max_kids``. distccd has no busy-slot count: its
    ``dcc_current_load`` is the host's running processes (from /proc/loadavg),
    so what is busy there is estimated from our own jobs in flight (busy=0)."""
    values = {}
    for line in body.decode("latin-1").splitlines():
        name, _, value = line.partition(" ")
        values[name] = value.strip()
    try:
        return Report(slots=int(values["dcc_max_kids"]), busy=0)
    except (KeyError, ValueError) as exc:
        raise ReportError(f"bad distccd stats: {exc}") from exc


async def _read_all(host: str, port: int, request: bytes, timeout_s: float) -> bytes:
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            if request:
                writer.write(request)
                await writer.drain()
            data = await reader.read(MAX_REPORT_BYTES)
            chunks = [data]
            while data and sum(map(len, chunks)) < MAX_REPORT_BYTES:
                data = await reader.read(MAX_REPORT_BYTES)
                chunks.append(data)
            return b"".join(chunks)
        finally:
            writer.close()


async def fetch_report(spec: BackendSpec, timeout_s: float) -> Report:
    """Read one backend's report (raises :class:`ReportError`)."""
    assert spec.status_port is not None
    if spec.kind == "distlb":
        request = f"GET /status HTTP/1.0\r\nHost: {spec.host}\r\n\r\n".encode()
    else:
        # distccd answers any connection at once; bytes it has not read when it
        # closes would turn its answer into a reset, so we send none.
        request = b""
    try:
        raw = await _read_all(spec.host, spec.status_port, request, timeout_s)
    except (OSError, TimeoutError) as exc:
        raise ReportError(f"status port: {exc or type(exc).__name__}") from exc
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = raw.partition(b"\n\n")
    if not head.startswith(b"HTTP/1.") or b" 200 " not in head.split(b"\n", 1)[0]:
        raise ReportError(f"status port answered {head[:40]!r}")
    return parse_distlb_status(body) if spec.kind == "distlb" else parse_distccd_stats(body)


class Pool:
    """All backends, their watchers, and a condition jobs wait on for capacity."""

    def __init__(self, specs: Iterable[BackendSpec], settings: PoolSettings) -> None:
        self.settings = settings
        self.backends: dict[str, Backend] = {}
        self._tasks: dict[str, list[asyncio.Task[None]]] = {}
        self._changed = asyncio.Event()
        self._specs = list(specs)

    def start(self) -> None:
        self.reload(self._specs)

    def reload(self, specs: Iterable[BackendSpec]) -> None:
        """Adopt a new backend list: new ones start unknown, kept ones keep their state,
        removed ones stop being picked (their jobs in flight finish normally)."""
        wanted = {spec.name: spec for spec in specs}
        for name in list(self.backends):
            if name not in wanted:
                for task in self._tasks.pop(name, []):
                    task.cancel()
                del self.backends[name]
                log.info("backend_removed", backend=name)
        for name, spec in wanted.items():
            backend = self.backends.get(name)
            if backend is not None and backend.spec == spec:
                continue
            if backend is not None:
                for task in self._tasks.pop(name, []):
                    task.cancel()
            backend = Backend(spec, rise=self.settings.rise, fall=self.settings.fall)
            self.backends[name] = backend
            tasks = [asyncio.create_task(self._probe_loop(backend))]
            if spec.status_port is not None:
                tasks.append(asyncio.create_task(self._poll_loop(backend)))
            self._tasks[name] = tasks
            log.info("backend_added", backend=name, kind=spec.kind, status_port=spec.status_port)
        self.notify()

    async def stop(self) -> None:
        tasks = [t for group in self._tasks.values() for t in group]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    def notify(self) -> None:
        """Something changed that may free capacity: wake every waiting job."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for_change(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout_s)

    def healthy_count(self) -> int:
        return sum(1 for b in self.backends.values() if b.healthy)

    def _mark(self, backend: Backend, ok: bool, reason: str = "") -> None:
        was = backend.healthy
        if ok:
            backend.on_success()
        else:
            backend.on_failure(reason)
        if backend.healthy != was:
            log.warning(
                "backend_state",
                backend=backend.name,
                state="up" if backend.healthy else "down",
                reason=reason or "probes ok",
            )
            self.notify()

    async def _poll_loop(self, backend: Backend) -> None:
        while True:
            try:
                report = await fetch_report(backend.spec, self.settings.probe_timeout_s)
            except ReportError as exc:
                self._mark(backend, False, str(exc))
            else:
                backend.on_report(report)
                self.notify()
            await asyncio.sleep(self.settings.poll_interval_s)

    async def _probe_loop(self, backend: Backend) -> None:
        request = probe_request(self.settings.probe_compiler)
        deadline = self.settings.probe_timeout_s
        while True:
            started = time.monotonic()
            try:
                async with asyncio.timeout(deadline):  # the whole probe, connect included
                    reply = await compile_remote(
                        backend.spec.host,
                        backend.spec.port,
                        request,
                        connect_timeout_s=deadline,
                        timeout_s=deadline,
                    )
            except TimeoutError:
                self._mark(backend, False, f"probe: no reply within {deadline} s")
            except TurnedAway:
                pass  # busy is not sick: neither rise nor fall
            except ClientError as exc:
                self._mark(backend, False, f"probe: {exc}")
            else:
                if reply.status == 0 and reply.obj:
                    self._mark(backend, True)
                else:
                    self._mark(backend, False, f"probe compile failed: {reply.stderr[:200]!r}")
            elapsed = time.monotonic() - started
            await asyncio.sleep(max(0.0, self.settings.probe_interval_s - elapsed))
