"""The server's lifecycle: bind, drop privileges, serve, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable

import structlog

from client.cli import distlb_version
from daemon.bounds import limit_connections
from daemon.http_guard import HttpGuard
from daemon.lifecycle import ConnectionTasks, listen, serve_http
from daemon.notify import notify, start_watchdog, stopping
from daemon.reload import flag
from server.agent import serve_agent
from server.compilers import (
    cache_identities,
    compiler_identities,
    default_compiler_names,
    mark_sandboxes,
    resolve_compilers,
)
from server.config import ConfigError, ServerConfig
from server.connection import ConnectionContext, handle_connection
from server.http_status import make_app
from server.machine import read_sample
from server.pump import mark_pump, pump_dirs
from server.pump_headers import DigestMemo, HeadersWatch, headers_of, memo_path
from server.reloading import apply_config
from server.runner import RunLimits
from server.sandbox.check import check_compilers, check_sealed
from server.sandbox.identities import CompileUser, SandboxError
from server.sandbox.jobs_root import make_jobs_root, sweep_stale
from server.sandbox.sealed import check_pinned, release_when_unused
from server.sandbox.setup import make_sandbox, searchable_by
from server.sandbox.warm import WarmPool, first_kind
from server.slots import ReplyBudget, Slots
from server.stats import ServerStats

log = structlog.get_logger("distlb.server")
LOAD_SAMPLE_S = 5.0
VERSION_TIMEOUT_S = 5.0


class Service:
    def __init__(
        self, config: ServerConfig, reload_config: Callable[[], ServerConfig] | None = None
    ) -> None:
        self.config = config
        self._reload_config = reload_config
        """SIGHUP reads the config again with this (None: SIGHUP is ignored)."""
        self._reloading = asyncio.Lock()
        self._identifying: asyncio.Task[None] | None = None
        self._identified_at = 0.0
        self._watched: HeadersWatch | None = None
        """The system headers' watch whose descriptor the event loop reads."""
        explicit = bool(config.compiler)
        self.compilers = resolve_compilers(config.compiler or default_compiler_names(), explicit)
        self.sandbox = make_sandbox(config, self.compilers)
        identities = self.sandbox.identities
        # Whoever compiles must reach --tmp-dir: a job uid is no owner nor group member.
        reaching = (
            CompileUser("a job uid", identities.first, identities.first)
            if identities is not None
            else self.sandbox.shared_user
        )
        if reaching is not None and not searchable_by(config.tmp_dir, reaching):
            raise ConfigError(
                f"--tmp-dir {config.tmp_dir}: compilers run as {reaching.name}, "
                "who cannot reach it (it needs search permission on it and its parents)"
            )
        # What a server killed in this --tmp-dir left (server/sandbox/jobs_root.py). Job
        # directories live in one of our own, which others may pass through but not
        # list; each job's is its uid's alone (0700).
        for stale in sweep_stale(config.tmp_dir, self.sandbox.job_dirs.remove):
            log.warning("stale_jobs_removed", path=stale, reason="its server is gone")
        self.jobs_root = make_jobs_root(config.tmp_dir)
        try:
            versions = check_compilers(self.sandbox, self.compilers, self.jobs_root)
        except SandboxError as exc:
            self.sandbox.job_dirs.remove(self.jobs_root)
            raise ConfigError(str(exc)) from exc
        self.sandbox.sealed, self.sandbox.sealed_kinds, self.sandbox.held = check_sealed(
            self.sandbox, self.compilers, versions, self.jobs_root
        )
        release_when_unused(self.sandbox)
        self.compiler_info = mark_pump(
            mark_sandboxes(
                compiler_identities(self.compilers, versions),
                self.sandbox.mode,
                self.sandbox.sealed_kinds,
            ),
            config.pump == "on" and self.sandbox.mode == "bwrap",
        )
        # (before the first report: a fingerprint that came later would change the
        # report's token under the balancers' long polls, once, for nothing)
        self.header_memo = DigestMemo(memo_path()).load()
        fingerprints, headers_watch = headers_of(self.compiler_info, self.header_memo)
        for name, fingerprint in fingerprints.items():
            self.compiler_info[name]["pump_headers"] = fingerprint
        try:
            check_pinned(self.sandbox.held)
        except SandboxError as exc:
            self.sandbox.job_dirs.remove(self.jobs_root)
            raise ConfigError(str(exc)) from exc
        if self.sandbox.mode == "none":
            log.warning(
                "sandbox_off",
                reason="--sandbox none: compiles can read what their user can and reach "
                "the network (docs/security.md)",
            )
        self.slots = Slots(config.jobs)
        cache = config.result_cache()
        self.stats = ServerStats(
            self.slots,
            config.tmp_dir,
            result_cache=cache is not None,
            cache_stats=cache.stats if cache is not None else None,
            sandbox=self.sandbox.describe(),
        )
        self.ctx = ConnectionContext(
            stats=self.stats,
            compilers=self.compilers,
            judge=config.judge(self.compilers, on_disk=True),
            allow=config.networks(),
            wire_limits=config.wire_limits(),
            run_limits=RunLimits(lifetime_s=config.job_lifetime, kill_grace_s=config.kill_grace),
            sandbox=self.sandbox,
            pump=config.pump == "on",
            pump_dirs=pump_dirs(self.compiler_info),
            headers_watch=headers_watch,
            jobs_root=self.jobs_root,
            connections=config.connection_limits(),
            inflate=config.inflate_budget(),
            requests=config.request_budget(),
            replies=ReplyBudget(config.reply_memory_mb * 1024 * 1024),
            warm=WarmPool(self.sandbox, self.jobs_root, config.jobs, first_kind(self.sandbox))
            if self.sandbox.mode == "bwrap"
            else None,
            io_timeout_s=config.io_timeout,
            request_timeout_s=config.request_timeout,
            first_byte_timeout_s=config.first_byte_timeout,
            cache=cache,
            share_across_dirs=config.cache_share_across_dirs,
            acceptor=config.acceptor(),
            identities=cache_identities(self.compiler_info),
            on_upgrade=self.upgraded,
        )
        self.connections = self.ctx.connections
        self.status_allow = config.status_networks()
        """Who may read the status port (a reload changes it in place)."""
        self.http = HttpGuard(list(self.status_allow), config.http_limits(),
                              config.http_idle_timeout)  # fmt: skip
        self.stats.bounds = {
            "connections": self.connections.snapshot,
            "http_connections": self.http.snapshot,
            "inflating": self.ctx.inflate.snapshot,
            "request_memory": self.ctx.requests.snapshot,
            "reply_memory": self.ctx.replies.snapshot,
        }
        self.stats.bounds["job_dirs"] = self.sandbox.job_dirs.snapshot
        if self.ctx.warm is not None:
            self.stats.bounds["warm_sandboxes"] = self.ctx.warm.snapshot
        self._jobs = ConnectionTasks()
        self._stopping = asyncio.Event()

    def close(self) -> None:
        """Give back what the start made (the jobs directory, sandboxes started ahead)."""
        if self.ctx.warm is not None:
            self.ctx.warm.close()
        self.sandbox.job_dirs.remove(self.jobs_root)

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await handle_connection(self.ctx, reader, writer)

    def _refused_connection(self) -> None:
        self.stats.counters.rejected_connections += 1

    async def _sample_load(self) -> None:
        while True:
            await asyncio.sleep(LOAD_SAMPLE_S)
            self.stats.sample_load(LOAD_SAMPLE_S)

    async def _sample_machine(self) -> None:
        """The slots offered, by what the machine has free (server/machine.py)."""
        machine, me = self.stats.machine, os.getpid()
        while True:
            interval = self.config.load_interval
            rules = self.config.offer_rules()
            try:
                # On the loop's own thread: handed to another, the loop's thread would
                # be runnable as the machine's count is read and asleep as its own tree
                # is, one foreign task too many (review 24). Its cost follows the tree.
                machine.update(read_sample(me), interval)
            except Exception as exc:  # (a /proc that cannot be read: offer as configured)
                log.error("machine_sample_failed", reason=str(exc))
                machine.sample = None
            self.slots.offered = machine.offered(self.slots.capacity, self.slots.busy, rules)
            short = machine.memory_short(rules)
            self.slots.refusing = (
                f"only {machine.describe()['mem_available_mb']} MB of memory available; a job "
                f"may need {rules.memory_per_job_mb} MB (--memory-per-job-mb)"
                if short else None
            )  # fmt: skip
            await asyncio.sleep(interval)

    async def run(self) -> None:
        """Serve until SIGTERM, then drain. Whatever was started is closed again, also
        when a later step of the start fails (a port taken)."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(self.close)
            handler = self._jobs.serve(
                limit_connections(self.connections, self._on_connection, self._refused_connection)
            )
            compile_server, port = await listen(stack, handler, cfg.listen, cfg.port)
            app = make_app(
                self.stats, lambda: self.compiler_info, distlb_version(), self.status_allow
            )
            stats_port = await serve_http(stack, app, cfg.listen, cfg.stats_port, guard=self.http)
            agent_port = None
            if cfg.agent_port is not None:
                _, agent_port = await listen(
                    stack,
                    lambda r, w: serve_agent(self.slots, self.ctx.allow, r, w),
                    cfg.listen,
                    cfg.agent_port,
                )
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stopping.set)
            reloads: set[asyncio.Task[None]] = set()

            def reload() -> None:
                task = asyncio.create_task(self.reload())
                reloads.add(task)
                task.add_done_callback(reloads.discard)

            # (never the default action, which would end the server)
            loop.add_signal_handler(signal.SIGHUP, reload)
            sampler = asyncio.create_task(self._sample_load())
            stack.callback(sampler.cancel)
            machine = asyncio.create_task(self._sample_machine())
            stack.callback(machine.cancel)
            start_watchdog(stack)
            self._watch_headers()
            if self.ctx.warm is not None:
                self.ctx.warm.fill()
            log.info(
                "server_ready",
                version=distlb_version(),
                port=port,
                stats_port=stats_port,
                agent_port=agent_port,
                slots=cfg.jobs,
                sandbox=self.sandbox.mode,
                job_uids=self.sandbox.describe()["job_uids"],
                compilers=sorted(self.compilers),
                job_lifetime_s=cfg.job_lifetime,
                auth=self.ctx.acceptor is not None,
            )
            notify("READY=1", f"STATUS=serving {cfg.jobs} slots on port {port}")
            await self._stopping.wait()
            await self._drain(compile_server)
        log.info("server_stopped", counters=self.stats.status({}, "")["counters"])

    def upgraded(self) -> None:
        """A job found a compiler's files upgraded: identify them again (one at a time,
        at most once a second while they stay broken, as during an upgrade's unpacking)."""
        now = time.monotonic()
        if self._identifying is not None and not self._identifying.done():
            return
        if now - self._identified_at < 1.0:
            return
        self._identify_soon(0.0)

    def _identify_soon(self, after_s: float) -> None:
        self._identifying = asyncio.ensure_future(self._identify_again(after_s))
        self._identifying.add_done_callback(lambda _: self._watch_headers())

    async def _identify_again(self, after_s: float) -> None:
        await asyncio.sleep(after_s)
        async with self._reloading:
            try:
                await apply_config(self, self.config)
            except Exception as exc:  # (a task of its own: nothing else would say it)
                log.error("identify_again_failed", reason=str(exc) or type(exc).__name__,
                          effect="the upgraded compiler's jobs are turned away")  # fmt: skip
            finally:
                self._identified_at = time.monotonic()

    def _watch_headers(self) -> None:
        """Read the system headers again as soon as one changes (server/pump_headers.py),
        not only when a pump job finds it: until the report says so, balancers answer
        pump jobs from the cache by the old fingerprint. (At most once a second, as
        :meth:`upgraded`; a package's unpacking is read again until it is still.)"""
        loop = asyncio.get_running_loop()
        if self._watched is not None:
            loop.remove_reader(self._watched.fd)
        watch = self._watched = self.ctx.headers_watch
        if watch is not None and watch.ok:
            loop.add_reader(watch.fd, self._headers_changed)
            self._headers_changed()  # (one seen before: not read again yet)

    def _headers_changed(self) -> None:
        watch = self._watched
        if watch is None or not watch.changed():
            return
        asyncio.get_running_loop().remove_reader(watch.fd)
        if self._identifying is not None and not self._identifying.done():
            return  # (when it ends, the context's watch is read again: this one, or new)
        self._identify_soon(max(0.0, 1.0 - (time.monotonic() - self._identified_at)))

    async def reload(self) -> None:
        """SIGHUP: read the config again and apply it (server/reloading.py), or keep
        the one in force and say why not. One reload at a time."""
        if self._reload_config is None:
            return
        async with self._reloading:
            notify("RELOADING=1")
            try:
                changed = await apply_config(self, self._reload_config())
            except ConfigError as exc:
                log.error("reload_failed", reason=str(exc))
                self.stats.reload_failed(str(exc))
                status = f"STATUS=reload failed ({exc}); serving {self.config.jobs} slots"
            else:
                self._watch_headers()
                self.stats.reload_succeeded()
                log.info("reloaded", changed=[flag(name) for name in changed],
                         compilers=sorted(self.compilers))  # fmt: skip
                what = ", ".join(flag(name) for name in changed) or "nothing"
                status = f"STATUS=reloaded (changed: {what}); serving {self.config.jobs} slots"
            notify("READY=1", status)

    async def _drain(self, compile_server: asyncio.Server) -> None:
        """Stop taking jobs; let those running finish for the grace, then kill them."""
        cfg = self.config
        self.slots.accepting = False
        compile_server.close()
        notify(*stopping(cfg.shutdown_grace))
        log.info("server_draining", running=len(self._jobs), grace_s=cfg.shutdown_grace)
        await self._jobs.drain(
            cfg.shutdown_grace, lambda n: log.warning("server_killing_jobs", count=n)
        )
