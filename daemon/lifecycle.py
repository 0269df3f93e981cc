"""A daemon's life: its command line (config, logging, the loop, exit statuses) and
the connections it serves (tracked, so that shutdown can let them finish, then end
them)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog
from aiohttp import web

from client.cli import run_loop
from daemon.bounds import DEFAULT_HTTP_IDLE_TIMEOUT_S
from daemon.config import ConfigError
from daemon.http_guard import HttpGuard


class ConnectionTasks:
    """The tasks serving open connections, so that shutdown can wait for them, then end them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def serve(
        self, handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        """``handler`` wrapped for ``asyncio.start_server``, each call tracked."""

        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            try:
                await handler(reader, writer)
            finally:
                self._tasks.discard(task)

        return tracked

    async def drain(self, grace_s: float, on_cancel: Callable[[int], None] | None = None) -> int:
        """Let the connections finish for ``grace_s``, then cancel the rest (which kills
        their work), telling ``on_cancel`` how many first; returns that number."""
        if not self._tasks:
            return 0
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
        if pending and on_cancel is not None:
            on_cancel(len(pending))
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=10)
        return len(pending)


def service_main(
    prog: str,
    load: Callable[[list[str] | None], Any],
    serve: Callable[[Any], Coroutine[Any, Any, None]],
    argv: list[str] | None,
    supervise: Callable[[Any], int | None] | None = None,
    check: Callable[[Any], Coroutine[Any, Any, None]] | None = None,
) -> int:
    """A daemon's command line: config (exit 2 on errors), logging, the loop;
    exit 1 when it cannot start (e.g. a port is taken). With ``--check-config`` the
    config is read and ``check(config)`` runs the daemon's own start-up checks, all
    but the listening (0, or 2 and why not: the verdict a start would give).
    ``supervise(config)``, when given, may run the daemon itself (as several
    processes) and return its exit status; None: run ``serve`` here."""
    from daemon import logs

    try:
        config = load(argv)
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    if getattr(config, "check_config", None):
        # (what the checks log goes to stderr, warnings and worse only: stdout says
        # the verdict)
        logs.configure(config.log_format, "warning")
        try:
            if check is not None:
                run_loop(check(config))
        except ConfigError as exc:
            print(f"{prog}: {exc}", file=sys.stderr)
            return 2
        print(f"{prog}: {config.check_config}: the config is valid")
        return 0
    logs.configure(config.log_format, config.log_level)
    log = structlog.get_logger(prog)
    if supervise is not None:
        status = supervise(config)
        if status is not None:
            return status
    return run_service(log, serve(config))


def run_service(log: Any, main: Coroutine[Any, Any, None]) -> int:
    """Run a daemon's main coroutine: 0 when it ends, 2 on a config error, 1 when it
    cannot start (e.g. a port is taken)."""
    try:
        run_loop(main)
    except ConfigError as exc:
        log.error("config_error", reason=str(exc))
        return 2
    except OSError as exc:
        log.error("startup_failed", reason=str(exc))
        return 1
    return 0


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def listen(
    stack: contextlib.AsyncExitStack,
    handler: Handler,
    host: str | None = None,
    port: int | None = None,
    sock: socket.socket | None = None,
) -> tuple[asyncio.Server, int]:
    """A TCP server on ``host:port`` (or an already bound ``sock``), closed when ``stack``
    unwinds, however the start-up that follows ends; with the port it got."""
    if sock is not None:
        server = await asyncio.start_server(handler, sock=sock, backlog=1024)
    else:
        server = await asyncio.start_server(handler, host, port, reuse_address=True, backlog=1024)
    stack.callback(server.close)
    return server, int(server.sockets[0].getsockname()[1])


async def serve_http(
    stack: contextlib.AsyncExitStack,
    app: web.Application,
    host: str | None = None,
    port: int | None = None,
    path: str | None = None,
    guard: HttpGuard | None = None,
) -> int | None:
    """``app`` on ``host:port`` (or the Unix socket ``path``), cleaned up when ``stack``
    unwinds; returns the TCP port it got (None on a Unix socket). On TCP, ``guard``
    checks each connection as it is accepted, and idle ones are closed after its
    timeout (daemon/http_guard.py)."""
    idle_timeout_s = guard.idle_timeout_s if guard is not None else DEFAULT_HTTP_IDLE_TIMEOUT_S
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=idle_timeout_s)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    if path is not None:
        await web.UnixSite(runner, path).start()
        return None
    if guard is None:
        raise ValueError("an HTTP port on TCP needs a guard")
    handlers = runner.server
    assert handlers is not None  # (set up above)
    server = await asyncio.get_running_loop().create_server(
        guard.protocol_factory(handlers), host, port or 0, reuse_address=True, backlog=1024
    )
    stack.callback(server.close)  # (before the runner's cleanup: the stack unwinds in reverse)
    return int(server.sockets[0].getsockname()[1])
