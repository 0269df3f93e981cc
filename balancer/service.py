"""The balancer's lifecycle: bind, start the pool, serve; SIGTERM drains, SIGHUP reloads."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable

import structlog

from balancer.admin import make_app
from balancer.config import BalancerConfig, ConfigError
from balancer.connection import ConnectionContext, handle_connection
from balancer.dispatch import Dispatcher
from balancer.pool import Pool
from balancer.stats import BalancerStats
from balancer.workers import WorkerPlace
from client.cli import distlb_version
from daemon.access import parse_networks
from daemon.bounds import limit_connections
from daemon.budgets import ByteBudget
from daemon.http_guard import HttpGuard
from daemon.lifecycle import ConnectionTasks, listen, serve_http
from daemon.notify import notify, start_watchdog, stopping
from wire import Limits

log = structlog.get_logger("distlb.balancer")
LOCAL_CHECK = parse_networks(["127.0.0.1/32", "::1/128"])
"""Where keepalived's check of /healthz comes from (this machine), whatever --admin-allow."""


class Service:
    def __init__(
        self,
        config: BalancerConfig,
        reload_config: Callable[[], BalancerConfig],
        place: WorkerPlace | None = None,
    ) -> None:
        self.config = config
        self._reload_config = reload_config
        self.place = place
        """With ``--workers``: which worker this is, its socket and what it shares."""
        self.pool = Pool(config.backend_specs(), config.pool_settings())
        self.pool.routing = config.routing()
        if place is not None:
            self.pool.shared = place.shared
        limits = Limits(max_source_bytes=config.max_source_mb * 1024 * 1024)
        self.cache = config.result_cache()
        self.dispatcher = Dispatcher(
            self.pool, config.dispatch_settings(), limits, cache=self.cache
        )
        self.stats = BalancerStats(self.pool, self.dispatcher)
        self.pool.add_state_listener(self.stats.activity.state_changed)
        self.ctx = ConnectionContext(
            stats=self.stats,
            dispatcher=self.dispatcher,
            allow=config.networks(),
            limits=limits,
            io_timeout_s=config.io_timeout,
            request_timeout_s=config.request_timeout,
            acceptor=config.acceptor(),
            judge=config.judge(None, on_disk=False),
            inflate=config.inflate_budget(),
            requests=config.request_budget(),
            replies=ByteBudget(config.reply_memory_mb * 1024 * 1024, "--reply-memory-mb"),
        )
        self.connections = config.connection_limits()
        # The admin port: --admin-allow, and this machine for keepalived's /healthz (the
        # pages' own allowlist still answers anything else from there with 403).
        self.http = HttpGuard([*config.admin_networks(), *LOCAL_CHECK], config.http_limits(),
                              config.http_idle_timeout)  # fmt: skip
        self.stats.bounds = {
            "connections": self.connections.snapshot,
            "http_connections": self.http.snapshot,
            "inflating": self.ctx.inflate.snapshot,
            "request_memory": self.ctx.requests.snapshot,
            "reply_memory": self.ctx.replies.snapshot,
        }
        self._jobs = ConnectionTasks()
        self._serving = False
        self._stopping = asyncio.Event()

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await handle_connection(self.ctx, reader, writer)

    def _refused_connection(self) -> None:
        self.stats.counters.rejected_connections += 1

    @property
    def _speaks_for_service(self) -> bool:
        """Whether this process tells systemd the balancer's state (with --workers, the
        first worker does, for all)."""
        return self.place is None or self.place.index == 0

    def _reload(self) -> None:
        if self._speaks_for_service:
            notify("RELOADING=1")
        try:
            fresh = self._reload_config()
            specs = fresh.backend_specs()
        except ConfigError as exc:
            log.error("reload_failed", reason=str(exc))
        else:
            self.pool.reload(specs)
            log.info("reloaded", backends=[s.name for s in specs])
        if self._speaks_for_service:
            notify("READY=1")

    async def _sample_loop(self) -> None:
        """The dashboard's history: a sample every few seconds."""
        while True:
            await asyncio.sleep(self.stats.activity.history.sample_s)
            self.stats.sample()

    async def run(self) -> None:
        """Serve until SIGTERM, then drain. Whatever was started is closed again, also
        when a later step of the start fails (a port taken)."""
        cfg = self.config
        place = self.place
        loop = asyncio.get_running_loop()
        async with contextlib.AsyncExitStack() as stack:
            if self.cache is not None:
                stack.push_async_callback(self.cache.close)
            self.pool.start()
            stack.push_async_callback(self.pool.stop)
            sampling = asyncio.create_task(self._sample_loop())
            stack.callback(sampling.cancel)
            handler = self._jobs.serve(
                limit_connections(self.connections, self._on_connection, self._refused_connection)
            )
            server, port = await listen(
                stack, handler, cfg.listen, cfg.port, sock=place.sock if place else None
            )
            public = place is None or place.index == 0  # (the others: a Unix socket)
            app = make_app(self.stats, lambda: self._serving, place.peers if place else [],
                           max_viewers=cfg.dashboard_viewers,
                           allow=cfg.admin_networks() if public else None)  # fmt: skip
            if place is None or place.index == 0:
                admin_port = await serve_http(
                    stack, app, cfg.listen, cfg.admin_port, guard=self.http
                )
            else:
                await serve_http(stack, app, path=place.admin_socket(place.index))
            self._serving = True
            loop.add_signal_handler(signal.SIGTERM, self._stopping.set)
            loop.add_signal_handler(signal.SIGINT, self._stopping.set)
            loop.add_signal_handler(signal.SIGHUP, self._reload)
            if place is None:
                start_watchdog(stack)  # (with --workers, the supervisor restarts workers)
            if place is None or place.index == 0:
                log.info(
                    "balancer_ready",
                    version=distlb_version(),
                    port=port,
                    admin_port=admin_port,
                    backends=list(self.pool.backends),
                    auth=self.ctx.acceptor is not None,
                    backend_auth=[s.name for s in cfg.backend_specs() if s.auth is not None],
                    workers=place.count if place is not None else 1,
                )
                notify("READY=1", f"STATUS=balancing {len(self.pool.backends)} backends")
            else:
                log.info("worker_ready", port=port)
            await self._stopping.wait()
            self._serving = False
            server.close()
            if self._speaks_for_service:
                notify(*stopping(cfg.shutdown_grace))
            log.info("balancer_draining", in_flight=len(self._jobs), grace_s=cfg.shutdown_grace)
            await self._jobs.drain(
                cfg.shutdown_grace, lambda n: log.warning("balancer_cancelling_jobs", count=n)
            )
        log.info("balancer_stopped", totals=self.stats.status()["totals"])
