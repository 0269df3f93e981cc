"""The server's lifecycle: bind, drop privileges, serve, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import pwd
import shutil
import signal
import stat
import tempfile

import structlog

from cache import CompilerIdentity
from client.cli import distlb_version
from daemon.bounds import limit_connections
from daemon.lifecycle import ConnectionTasks, listen, serve_http
from daemon.notify import notify, start_watchdog
from server.admission import Slots
from server.agent import serve_agent
from server.compilers import compiler_identities, default_compiler_names, resolve_compilers
from server.config import ConfigError, ServerConfig
from server.connection import ConnectionContext, ReplyBudget, handle_connection
from server.http_status import make_app
from server.runner import RunLimits
from server.sandbox import (
    CompileUser,
    JobIdentities,
    JobLimits,
    Sandbox,
    SandboxError,
    toolchain_mounts,
)
from server.sandbox_check import check_compilers, check_programs
from server.stats import ServerStats
from server.warm import WarmPool
from wire import Limits

log = structlog.get_logger("distlb.server")
LOAD_SAMPLE_S = 5.0
VERSION_TIMEOUT_S = 5.0


def compile_user(user: str | None) -> CompileUser | None:
    """Who compilers run as: when we are root, ``user`` or the first unprivileged
    default that exists (as distccd does); otherwise ourselves (None)."""
    if os.geteuid() != 0:
        return None
    candidates = [user] if user else list(UNPRIVILEGED)
    for name in candidates:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        if entry.pw_uid == 0:
            raise ConfigError(f"--user {name!r} is root; compilers must not run as root")
        return CompileUser(name, entry.pw_uid, entry.pw_gid)
    raise ConfigError(f"--user: no such user among {candidates}")


UNPRIVILEGED = ("distcc", "distccd", "nobody")


def searchable_by(path: str, user: CompileUser) -> bool:
    """True when ``user`` can reach into ``path`` (search permission on it and every parent).

    Job dirs are created by us and handed to the compile user; it needs only that.
    """
    current = os.path.abspath(path)
    while True:
        st = os.stat(current)
        if st.st_uid == user.uid:
            bit = stat.S_IXUSR
        elif st.st_gid == user.gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
        parent = os.path.dirname(current)
        if parent == current:
            return True
        current = parent


def make_sandbox(config: ServerConfig, compilers: dict[str, str]) -> Sandbox:
    """The sandbox the config asks for, checked to work here. Raises ConfigError."""
    root = os.geteuid() == 0
    limits = JobLimits(
        memory_bytes=config.job_memory_mb * 1024 * 1024 if config.job_memory_mb else None,
        file_bytes=config.job_file_mb * 1024 * 1024,
        processes=config.job_processes,
        open_files=config.job_open_files,
        cpu_s=math.ceil(config.job_lifetime) + 1,  # the lifetime kill comes first
    )
    sandbox = Sandbox(mode="none", limits=limits, nice=config.nice)
    if config.sandbox == "bwrap":
        identities = JobIdentities(*config.job_uid_range()) if root else None
        sandbox = Sandbox(
            mode="bwrap",
            limits=limits,
            nice=config.nice,
            bwrap=shutil.which("bwrap") or "",
            mounts=toolchain_mounts(list(compilers.values()), config.trusted_specs_dir),
            identities=identities,
        )
    else:
        sandbox.shared_user = compile_user(config.user)
    try:
        check_programs(sandbox)
        if sandbox.identities is not None:
            sandbox.identities.check_unused()
    except SandboxError as exc:
        raise ConfigError(str(exc)) from exc
    return sandbox


class Service:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
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
        # Job directories live in one of our own, which others may pass through but not
        # list; each job's is its uid's alone (0700).
        self.jobs_root = tempfile.mkdtemp(prefix="distlb-jobs-", dir=config.tmp_dir)
        os.chmod(self.jobs_root, 0o711)  # noqa: S103 (passable by job uids, not listable)
        try:
            versions = check_compilers(self.sandbox, self.compilers, self.jobs_root)
        except SandboxError as exc:
            shutil.rmtree(self.jobs_root, ignore_errors=True)
            raise ConfigError(str(exc)) from exc
        self.compiler_info = compiler_identities(self.compilers, versions)
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
            wire_limits=Limits(max_source_bytes=config.max_source_mb * 1024 * 1024),
            run_limits=RunLimits(lifetime_s=config.job_lifetime, kill_grace_s=config.kill_grace),
            sandbox=self.sandbox,
            jobs_root=self.jobs_root,
            connections=config.connection_limits(),
            inflate=config.inflate_budget(),
            replies=ReplyBudget(config.reply_memory_mb * 1024 * 1024),
            warm=WarmPool(self.sandbox, self.jobs_root, config.jobs)
            if self.sandbox.mode == "bwrap"
            else None,
            io_timeout_s=config.io_timeout,
            request_timeout_s=config.request_timeout,
            cache=cache,
            share_across_dirs=config.cache_share_across_dirs,
            acceptor=config.acceptor(),
            identities={
                name: CompilerIdentity(info["version"], info["digest"])
                for name, info in self.compiler_info.items()
                if info["digest"] != "unknown"
            },
        )
        self.connections = self.ctx.connections
        self.stats.bounds = {
            "connections": self.connections.snapshot,
            "inflating": self.ctx.inflate.snapshot,
        }
        if self.ctx.warm is not None:
            self.stats.bounds["warm_sandboxes"] = self.ctx.warm.snapshot
        self._jobs = ConnectionTasks()
        self._stopping = asyncio.Event()

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

    async def run(self) -> None:
        """Serve until SIGTERM, then drain. Whatever was started is closed again, also
        when a later step of the start fails (a port taken)."""
        cfg = self.config
        loop = asyncio.get_running_loop()
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(shutil.rmtree, self.jobs_root, True)
            if self.ctx.warm is not None:
                stack.callback(self.ctx.warm.close)
            handler = self._jobs.serve(
                limit_connections(self.connections, self._on_connection, self._refused_connection)
            )
            compile_server, port = await listen(stack, handler, cfg.listen, cfg.port)
            app = make_app(
                self.stats, lambda: self.compiler_info, distlb_version(), cfg.status_networks()
            )
            stats_port = await serve_http(stack, app, cfg.listen, cfg.stats_port)
            agent_port = None
            if cfg.agent_port is not None:
                _, agent_port = await listen(
                    stack, lambda r, w: serve_agent(self.slots, r, w), cfg.listen, cfg.agent_port
                )
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stopping.set)
            sampler = asyncio.create_task(self._sample_load())
            stack.callback(sampler.cancel)
            start_watchdog(stack)
            if self.ctx.warm is not None:
                self.ctx.warm.fill()
            log.info(
                "server_ready",
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

    async def _drain(self, compile_server: asyncio.Server) -> None:
        """Stop taking jobs; let those running finish for the grace, then kill them."""
        cfg = self.config
        self.slots.accepting = False
        compile_server.close()
        notify("STOPPING=1")
        log.info("server_draining", running=len(self._jobs), grace_s=cfg.shutdown_grace)
        await self._jobs.drain(
            cfg.shutdown_grace, lambda n: log.warning("server_killing_jobs", count=n)
        )
