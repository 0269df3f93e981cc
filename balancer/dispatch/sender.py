"""Sending one attempt of a job to one backend: its slot held while it runs, its
backend's books kept from how it ended (health, latency, a turn-away's hold)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from balancer.dispatch.attempts import TIMER_SLACK_S
from balancer.pool.pool import Pool
from balancer.routing.backend import Backend
from balancer.routing.compilers import CompilerMissing
from balancer.routing.own_connections import OpenedOn
from balancer.settings import DispatchSettings
from client import ClientError, TurnedAway, compile_remote
from daemon.judge import EXIT_COMPILER_MISSING
from wire import ConnectionClosed, Limits, Reply, Request
from wire.events import exit_status

MISSING_COMPILER_STATUS = exit_status(EXIT_COMPILER_MISSING)
DEADLINE_MARGIN_S = 5.0


class Sender:
    def __init__(self, pool: Pool, settings: DispatchSettings, limits: Limits) -> None:
        self.pool = pool
        self.settings = settings
        self.limits = limits

    def start(
        self,
        backend: Backend,
        request: Request,
        on_connected: Callable[[str], None] | None = None,
        encoded: bytes | None = None,
    ) -> asyncio.Task[Reply]:
        """Send ``request`` to ``backend`` in a task, on the slot reserved for it
        (:meth:`Backend.reserve`, before any await: jobs woken together must see each
        other's choices), given back when the task ends however it ends, even
        cancelled before it ran. ``on_connected``: as :func:`client.compile_remote`'s."""
        backend.sent += 1
        task = asyncio.create_task(self.send(backend, request, on_connected, encoded))
        task.add_done_callback(lambda _: self.release(backend))
        return task

    def release(self, backend: Backend) -> None:
        backend.in_flight -= 1
        self.pool.notify()

    def release_reserved(self, acquiring: asyncio.Task[Backend]) -> None:
        """Give back the slot a task acquiring a backend reserved, if it got one."""
        if not acquiring.cancelled() and acquiring.exception() is None:
            self.release(acquiring.result())

    async def send(
        self,
        backend: Backend,
        request: Request,
        on_connected: Callable[[str], None] | None = None,
        encoded: bytes | None = None,
    ) -> Reply:
        """One attempt on a backend; keeps its health and latency books. ``encoded``:
        the request's bytes, shared by the job's attempts."""
        started = time.monotonic()
        routing = self.pool.routing
        opened = OpenedOn(backend.connections, on_connected)
        try:
            reply = await compile_remote(
                backend.spec.host,
                backend.spec.port,
                request,
                connect_timeout_s=self.settings.connect_timeout_s,
                # (past the dispatcher's deadline for the attempt, which comes first
                # and decides who is at fault: the job or the backend)
                timeout_s=self.settings.attempt_timeout_s + DEADLINE_MARGIN_S,
                idle_timeout_s=self.settings.backend_idle_timeout_s,
                limits=self.limits,
                auth=backend.spec.auth,
                on_connected=opened,
                encoded=encoded,
            )
        except TurnedAway as exc:
            compiler = request.argv[0]
            if (
                backend.spec.kind == "distccd"
                and isinstance(exc.__cause__, ConnectionClosed)  # a clean close, no reset
                and compiler not in routing.compiled[backend.name]
                and backend.spec.compilers is None  # (one it lists, it is taken at its word)
            ):
                # distccd never turns a job away when busy (it queues it); closing
                # unanswered, for a compiler it never ran, is how it refuses one
                # missing from its whitelist
                routing.refused(backend.name, compiler)
                raise CompilerMissing(f"{backend.name} has no {compiler!r}") from None
            # Someone else filled it: skip it briefly (its next report, or a quarter
            # poll interval, whichever comes first, tells us more).
            hold_s = self.pool.settings.poll_interval_s / 4
            backend.on_turned_away(time.monotonic(), hold_s)
            self.pool.report_stale(backend)
            # When the hold ends it may take jobs again: wake those waiting for a slot.
            asyncio.get_running_loop().call_later(hold_s + TIMER_SLACK_S, self.pool.notify)
            raise
        except ClientError as exc:
            self.pool.mark_failure(backend, f"job: {exc}")
            raise
        finally:
            opened.close()
        if reply.status == MISSING_COMPILER_STATUS:
            # distcc's "no such compiler": it lacks the job's compiler after all
            self.pool.routing.refused(backend.name, request.argv[0])
            raise CompilerMissing(f"{backend.name} has no {request.argv[0]!r}")
        if reply.status == 0 and reply.obj:
            if backend.spec.kind == "distccd":
                routing.compiled[backend.name].add(request.argv[0])
            # Only a good compile is evidence of health (it stands in for a probe) and
            # a measure of speed: a broken compiler fails fast and would look fastest.
            backend.good_replies += 1
            backend.record_latency(time.monotonic() - started)
        return reply
