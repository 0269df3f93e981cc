"""The balancer's lifecycle: bind, start the pool, serve; SIGTERM drains, SIGHUP reloads."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
from collections.abc import Callable

import structlog

from balancer.config import BalancerConfig, ConfigError
from balancer.connection import ConnectionContext, handle_connection
from balancer.dispatch.dispatcher import Dispatcher
from balancer.observe.admin import make_app
from balancer.observe.stats import BalancerStats
from balancer.pool.discovery import Discovery
from balancer.pool.pool import Pool
from balancer.routing.backend import BackendSpec
from balancer.workers.supervisor import WorkerPlace
from client.cli import distlb_version
from daemon.access import parse_networks
from daemon.bounds import limit_connections
from daemon.budgets import ByteBudget
from daemon.http_guard import HttpGuard
from daemon.lifecycle import ConnectionTasks, listen, serve_http
from daemon.notify import notify, start_watchdog, stopping
from daemon.reload import check_reloadable, flag
from wire import Limits

log = structlog.get_logger("distlb.balancer")
NEEDS_RESTART = frozenset({"listen", "port", "admin_port", "workers", "log_format", "log_level",
                           "dashboard_viewers"})  # fmt: skip
"""What only a restart applies: where it listens, its processes, and its logging (its
loggers are made once, for speed)."""
AUTH_SETTINGS = frozenset({
    "auth", "principal", "keytab", "allow_principals", "deny_principals", "auth_timeout",
    "max_handshakes", "max_handshakes_per_address",
})  # fmt: skip
CACHE_SETTINGS = frozenset({"cache_redis", "cache_redis_password_file", "cache_memory_mb",
                            "cache_ttl", "cache_timeout", "cache_secret_file"})  # fmt: skip
CACHE_CLOSE_DELAY_S = 30.0
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
        self.discovery = self._discovery(config)
        self.pool = Pool(config.backend_specs(), config.pool_settings())
        self.pool.routing = config.routing()
        if place is not None:
            self.pool.shared = place.shared
        limits = Limits(max_source_bytes=config.max_source_mb * 1024 * 1024)
        self.cache = config.result_cache()
        self.dispatcher = Dispatcher(
            self.pool, config.dispatch_settings(), limits, cache=self.cache
        )
        self.dispatcher.fair.groups_file = config.fair_groups_file()
        self.stats = BalancerStats(self.pool, self.dispatcher)
        self.stats.discovery = lambda: self.discovery.describe()
        self.pool.add_state_listener(self.stats.activity.state_changed)
        self.ctx = ConnectionContext(
            stats=self.stats,
            dispatcher=self.dispatcher,
            allow=config.networks(),
            limits=limits,
            io_timeout_s=config.io_timeout,
            request_timeout_s=config.request_timeout,
            first_byte_timeout_s=config.first_byte_timeout,
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
        self._admin_allow = config.admin_networks()
        """Who may read the admin port (a reload changes it in place)."""
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
        """SIGHUP: read the config again and apply it (:meth:`apply`), or keep the one
        in force and say why not."""
        if self._speaks_for_service:
            notify("RELOADING=1")
        serving = f"balancing {len(self.pool.backends)} backends"
        try:
            changed = self.apply(self._reload_config())
        except ConfigError as exc:
            log.error("reload_failed", reason=str(exc))
            self.stats.reload_failed(str(exc))
            status = f"STATUS=reload failed ({exc}); {serving}"
        else:
            self.stats.reload_succeeded()
            log.info("reloaded", changed=[flag(name) for name in changed],
                     backends=list(self.pool.backends))  # fmt: skip
            what = ", ".join(flag(name) for name in changed) or "nothing"
            status = f"STATUS=reloaded (changed: {what}); {serving}"
        if self._speaks_for_service:
            notify("READY=1", status)

    def _discovery(self, config: BalancerConfig) -> Discovery:
        return Discovery(config.dns_sources(), self._discovered, config.dns_server,
                         config.dns_min_interval, config.dns_max_interval)  # fmt: skip

    def _specs(self, config: BalancerConfig) -> list[BackendSpec]:
        """The static backends, then those DNS names (a static spec wins for one
        HOST:PORT; the first source that names one, among the others)."""
        specs = {spec.name: spec for spec in config.backend_specs()}
        sources: dict[str, str] = {}
        for label, found in self.discovery.specs().items():
            for spec in found:
                if spec.name not in specs:
                    specs[spec.name], sources[spec.name] = config.with_backend_auth(spec), label
        self.pool.sources = sources
        return list(specs.values())

    def _discovered(self) -> None:
        """A DNS source's set changed: the pool takes the merged list, as a reload."""
        self.pool.reload(self._specs(self.config))

    def apply(self, fresh: BalancerConfig) -> list[str]:
        """Take every setting of ``fresh`` that can change while the balancer runs, all
        at once (nothing is changed when any part of it cannot work); returns what
        changed. Raises :class:`ConfigError` (:class:`ReloadRefused` for a setting
        only a restart applies). Jobs running keep what they hold; the next job, probe
        or connection sees the new settings."""
        changed = check_reloadable(self.config, fresh, NEEDS_RESTART)
        if not changed:
            return changed
        # Everything built first (any of it may raise), then swapped in one go.
        fresh.backend_specs()
        discovery = self._discovery(fresh)
        routing = fresh.routing()
        judge = fresh.judge(None, on_disk=False)
        acceptor = fresh.acceptor() if set(changed) & AUTH_SETTINGS else self.ctx.acceptor
        allow, admin_allow = fresh.networks(), fresh.admin_networks()
        cache = self.cache
        if set(changed) & CACHE_SETTINGS:
            cache = fresh.result_cache()
        connections, http = fresh.connection_limits(), fresh.http_limits()
        groups = self.dispatcher.fair.groups_file
        if "fair_groups" in changed:
            groups = fresh.fair_groups_file()
        # (a job's steps and this run on one event loop: nothing sees half of it; a new
        # connection takes the new context, one open keeps the context it began with)
        ctx = self.ctx = dataclasses.replace(
            self.ctx, allow=allow, judge=judge, acceptor=acceptor,
            limits=Limits(max_source_bytes=fresh.max_source_mb * 1024 * 1024),
            io_timeout_s=fresh.io_timeout, request_timeout_s=fresh.request_timeout,
            first_byte_timeout_s=fresh.first_byte_timeout,
        )  # fmt: skip
        ctx.inflate.resize(fresh.max_inflating_mb * 1024 * 1024)
        ctx.requests.resize(fresh.request_memory_mb * 1024 * 1024)
        ctx.replies.resize(fresh.reply_memory_mb * 1024 * 1024)
        self.connections.adopt(connections)
        self.http.limits.adopt(http)
        self.http.networks = [*admin_allow, *LOCAL_CHECK]
        self.http.idle_timeout_s = fresh.http_idle_timeout
        self._admin_allow[:] = admin_allow
        self.pool.routing.mode, self.pool.routing.pins = routing.mode, routing.pins
        self.pool.apply_settings(fresh.pool_settings())
        self.discovery.adopt(discovery)
        self.pool.reload(self._specs(fresh))
        self.dispatcher.apply(fresh.dispatch_settings(), cache)
        self.dispatcher.fair.groups_file = groups
        if cache is not self.cache:
            old, self.cache = self.cache, cache
            if old is not None:  # (lookups in flight end within --cache-timeout)
                asyncio.get_running_loop().call_later(
                    CACHE_CLOSE_DELAY_S, lambda: asyncio.create_task(old.close())
                )
        self.config = fresh
        return changed

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
                           allow=self._admin_allow if public else None)  # fmt: skip
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
            # DNS sources are asked now, the first answers joining the pool as they come
            # (the balancer listens and reloads meanwhile; a reload may add sources).
            self.discovery.start()
            stack.callback(self.discovery.close)
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
