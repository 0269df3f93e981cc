"""SIGHUP on the server: what a running server can take from a config read again.

Live: the allow lists (jobs, status page, agent port), Kerberos settings and principal
lists, the judge's options, the compilers (found again and each run in the sandbox
again, as at start), the jobs' limits and niceness (the sandboxes started ahead are
replaced, so no job runs with the old ones), timeouts, the bounds, the result cache's
secret and size. Only a restart applies :data:`NEEDS_RESTART`. A reload is checked
whole before anything changes: a new compiler that does not run in the sandbox, a
keytab that cannot be read, leave the server as it was, and say why.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any, Protocol

import structlog

from daemon.access import Network
from daemon.config import ConfigError
from daemon.http_guard import HttpGuard
from daemon.reload import check_reloadable
from server.compilers import (
    cache_identities,
    compiler_identities,
    default_compiler_names,
    mark_sandboxes,
    resolve_compilers,
)
from server.config import ServerConfig
from server.connection import ConnectionContext
from server.pump import mark_pump, pump_dirs
from server.pump_headers import DigestMemo, headers_of
from server.runner import RunLimits
from server.sandbox.check import check_compilers, check_sealed
from server.sandbox.identities import SandboxError
from server.sandbox.launcher import Sandbox
from server.sandbox.sealed import changed_since_pinned, check_pinned, release_when_unused
from server.sandbox.setup import make_sandbox


class Service(Protocol):
    """What a reload changes of the running server (server/service.py's ``Service``)."""

    config: ServerConfig
    ctx: ConnectionContext
    sandbox: Sandbox
    jobs_root: str
    http: HttpGuard
    status_allow: list[Network]
    compilers: dict[str, str]
    compiler_info: dict[str, dict[str, Any]]
    header_memo: DigestMemo


log = structlog.get_logger("distlb.server")

NEEDS_RESTART = frozenset({
    "listen", "port", "stats_port", "agent_port", "jobs", "job_uids", "sandbox", "tmp_dir",
    "user", "cache_dir", "log_format", "log_level",
})  # fmt: skip
"""Where it listens, how many slots and uids it has, how it sandboxes, where its files
are, and its logging (its loggers are made once, for speed)."""
AUTH_SETTINGS = frozenset({
    "auth", "principal", "keytab", "allow_principals", "deny_principals", "auth_timeout",
    "max_handshakes", "max_handshakes_per_address",
})  # fmt: skip
CACHE_SETTINGS = frozenset({"cache_secret_file", "cache_size"})
UPGRADE_SETTLE_S = 2.0
"""After an upgrade's compilers are identified again, how long their sealed jobs are
still turned away: a balancer learns a new identity from its next report (a long poll
answers at once), and must not store a new compiler's object under the old one."""


def _checked_sandbox(
    service: Service, fresh: ServerConfig, compilers: dict[str, str]
) -> tuple[Sandbox, dict[str, str]]:
    """The sandbox ``fresh`` asks for, sharing the running one's job uids and job
    directories, with each compiler checked in it as at start (blocking: a thread)."""
    sandbox = make_sandbox(fresh, compilers, service.sandbox.identities)
    sandbox.job_dirs = service.sandbox.job_dirs
    try:
        versions = check_compilers(sandbox, compilers, service.jobs_root)
    except SandboxError as exc:
        raise ConfigError(str(exc)) from exc
    sandbox.sealed, sandbox.sealed_kinds, sandbox.held = check_sealed(
        sandbox, compilers, versions, service.jobs_root
    )
    release_when_unused(sandbox)  # (its pinned files: once no context holds it)
    return sandbox, versions


async def apply_config(service: Service, fresh: ServerConfig) -> list[str]:
    """Take every setting of ``fresh`` that can change while the server runs, or none
    (raises :class:`ConfigError`, :class:`daemon.reload.ReloadRefused` for a setting
    only a restart applies), and identify the compilers again when their files changed
    (an upgrade); returns the settings that changed. Jobs running keep what they began
    with."""
    changed = check_reloadable(service.config, fresh, NEEDS_RESTART)
    sandbox_settles = False
    # A package upgrade renamed new files over the compilers' (the files held open since
    # they were identified tell: server/sandbox/sealed.py pin): identify them again,
    # config or not.
    upgraded = [p for mounts in service.sandbox.held.values() for p in changed_since_pinned(mounts)]
    headers_changed = service.ctx.headers_watch is not None and service.ctx.headers_watch.changed()
    if not changed and not upgraded and not headers_changed:
        return changed
    if upgraded:
        sandbox_settles = True
        log.info("toolchain_changed", files=upgraded[:10], count=len(upgraded),
                 effect="compilers identified again; their jobs run the new files")  # fmt: skip
    compilers = resolve_compilers(fresh.compiler or default_compiler_names(), bool(fresh.compiler))
    sandbox, versions = await asyncio.to_thread(_checked_sandbox, service, fresh, compilers)
    ctx = service.ctx
    judge = fresh.judge(compilers, on_disk=True)
    acceptor = fresh.acceptor() if set(changed) & AUTH_SETTINGS else ctx.acceptor
    cache = fresh.result_cache() if set(changed) & CACHE_SETTINGS else ctx.cache
    allow, status_allow = fresh.networks(), fresh.status_networks()
    connections, http = fresh.connection_limits(), fresh.http_limits()
    info = mark_sandboxes(
        await asyncio.to_thread(compiler_identities, compilers, versions),
        sandbox.mode,
        sandbox.sealed_kinds,
    )
    info = await asyncio.to_thread(mark_pump, info, fresh.pump == "on" and sandbox.mode == "bwrap")
    fingerprints, headers_watch = await asyncio.to_thread(headers_of, info, service.header_memo)
    for name, fingerprint in fingerprints.items():
        info[name]["pump_headers"] = fingerprint
    before = {n: e.get("pump_headers") for n, e in service.compiler_info.items()}
    if headers_changed or before != {n: e.get("pump_headers") for n, e in info.items()}:
        # (balancers must hear of the new fingerprint before a job compiles with them)
        sandbox_settles = True
        log.info("pump_headers_changed", effect="system headers read again; pump jobs "
                 "turned away until balancers have heard")  # fmt: skip
    try:
        check_pinned(sandbox.held)
    except SandboxError as exc:
        raise ConfigError(str(exc)) from exc
    # Swapped at once (one event loop: no job sees half of it). A new connection takes
    # the new context; one open keeps the context it began with.
    service.ctx = dataclasses.replace(
        ctx, compilers=compilers, judge=judge, allow=allow, sandbox=sandbox, cache=cache,
        acceptor=acceptor, share_across_dirs=fresh.cache_share_across_dirs,
        wire_limits=fresh.wire_limits(), pump=fresh.pump == "on", pump_dirs=pump_dirs(info),
        headers_watch=headers_watch,
        run_limits=RunLimits(lifetime_s=fresh.job_lifetime, kill_grace_s=fresh.kill_grace),
        io_timeout_s=fresh.io_timeout, request_timeout_s=fresh.request_timeout,
        first_byte_timeout_s=fresh.first_byte_timeout,
        identities=cache_identities(info),
    )  # fmt: skip
    ctx.inflate.resize(fresh.max_inflating_mb * 1024 * 1024)
    ctx.requests.resize(fresh.request_memory_mb * 1024 * 1024)
    ctx.replies.max_bytes = fresh.reply_memory_mb * 1024 * 1024
    ctx.connections.adopt(connections)
    service.http.limits.adopt(http)
    service.http.networks = status_allow
    service.http.idle_timeout_s = fresh.http_idle_timeout
    service.status_allow[:] = status_allow
    if sandbox_settles:  # (balancers learn the new identities from their next report)
        sandbox.settling_until = time.monotonic() + UPGRADE_SETTLE_S
    service.sandbox, service.compilers, service.compiler_info = sandbox, compilers, info
    # Balancers holding a report request hear of the compilers now, not at its end (a
    # new identity after an upgrade must reach them within the settling time: a
    # sixteenth review).
    wake = ctx.stats.slots.on_change
    if wake is not None:
        wake()
    if ctx.warm is not None:
        ctx.warm.renew(sandbox)  # (no job starts in a sandbox made with the old limits)
    service.config = fresh
    return changed
