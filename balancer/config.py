"""One BalancerConfig, from built-in defaults, a TOML file, then flags (in that order)."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from dataclasses import dataclass, field

from balancer.pool.discovery import DnsSource
from balancer.routing.backend import BackendSpec, SpecError
from balancer.routing.compilers import IDENTITY_MODES, CompilerRouting
from balancer.routing.groups import GroupsError, GroupsFile
from balancer.settings import DispatchSettings, PoolSettings
from cache import BadRedisURL, MemoryStore, RedisStore, ResultCache, Store, parse_redis_url
from client.initiator import Initiator
from daemon.access import parse_networks
from daemon.bounds import BoundsConfig
from daemon.config import ConfigError, check_common, settings_from
from daemon.gss import AcceptorConfig
from daemon.judge_config import JudgeConfig
from daemon.secret_files import CacheSecretConfig, read_secret_file

__all__ = ["BalancerConfig", "ConfigError"]


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


MAX_WORKERS = 64


@dataclass
class BalancerConfig(AcceptorConfig, JudgeConfig, BoundsConfig, CacheSecretConfig):
    listen: str = "0.0.0.0"  # noqa: S104 (it serves the network; --allow guards it)
    port: int = 3632
    admin_port: int = 3634
    dashboard_viewers: int = 64
    admin_allow: list[str] | None = None
    """Who may connect to the admin port (and this machine, for /healthz; default: as
    --allow)."""
    backend: list[str] = field(default_factory=list)
    backends_from: list[str] = field(default_factory=list)
    backends_from_hosts: list[str] = field(default_factory=list)
    dns_server: str | None = None
    dns_min_interval: float = 5.0
    dns_max_interval: float = 300.0
    allow: list[str] = field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    poll_interval: float = 0.5
    fast_poll_interval: float = 0.1
    idle_poll_interval: float = 5.0
    probe_interval: float = 1.0
    idle_probe_interval: float = 30.0
    report_wait: float = 5.0
    probe_timeout: float = 1.0
    probe_compiler: str = "gcc"
    rise: int = 2
    fall: int = 2
    queue_timeout: float = 10.0
    max_attempts: int = 3
    hedge_after: float | None = None
    hedge_min: float = 5.0
    tail_hedge: float = 2.0
    wait_for_faster: float = 1.25
    connect_timeout: float = 1.0
    backend_idle_timeout: float = 10.0
    attempt_timeout: float = 1500.0
    attempt_deadline_factor: float = 20.0
    attempt_deadline_min: float = 60.0
    max_hedges: int = 2
    fair_share: bool = True
    fair_memory: float = 60.0
    fair_groups: str | None = None
    io_timeout: float = 60.0
    request_timeout: float = 120.0
    max_source_mb: int = 256
    max_inflating_mb: int = 2048
    request_memory_mb: int = 2048
    """(The server's are 1024.) The balancer holds the source of every job in flight, a
    farm's worth: 500 jobs of 2 MB preprocessed C++ are 1 GB, with room beside them to
    read and inflate the next ones (docs/security.md)."""
    reply_memory_mb: int = 1024
    shutdown_grace: float = 30.0
    workers: int = 1
    compiler_identity: str = "majority"
    pin_compiler: list[str] = field(default_factory=list)
    cache_redis: str | None = None
    cache_redis_password_file: str | None = None
    """Redis's password (requirepass, or an ACL user's), read from a file at start."""
    cache_memory_mb: int = 0
    cache_ttl: int = 7 * 86400
    cache_timeout: float = 0.25
    cache_trust_unsandboxed: bool = False
    cache_share_across_dirs: bool = False
    log_format: str = "auto"
    log_level: str = "info"
    backend_auth: bool = False
    backend_service: str = "host"
    client_keytab: str | None = None
    client_principal: str | None = None
    check_config: str | None = None
    """``--check-config FILE``: check the config and exit (daemon/lifecycle.py)."""

    def backend_specs(self) -> list[BackendSpec]:
        try:
            specs = [BackendSpec.parse(text) for text in self.backend]
        except SpecError as exc:
            raise ConfigError(f"--backend {exc}") from exc
        if len({s.name for s in specs}) != len(specs):
            raise ConfigError("--backend: the same HOST:PORT is listed twice")
        return [self.with_backend_auth(spec) for spec in specs]

    def dns_sources(self) -> list[DnsSource]:
        """``--backends-from`` and ``--backends-from-hosts`` (balancer/pool/discovery.py)."""
        try:
            sources = [DnsSource("srv", name.strip().rstrip(".")) for name in self.backends_from]
            sources += [DnsSource.hosts(text) for text in self.backends_from_hosts]
        except SpecError as exc:
            raise ConfigError(f"--backends-from-hosts {exc}") from exc
        if any(not s.name or len(s.name) > 253 for s in sources):
            raise ConfigError("--backends-from: a DNS name of 1 to 253 characters")
        if len({s.label for s in sources}) != len(sources):
            raise ConfigError("--backends-from, --backends-from-hosts: a name is listed twice")
        return sources

    def with_backend_auth(self, spec: BackendSpec) -> BackendSpec:
        """The spec with our initiator settings, when we authenticate to that backend
        (its own ``auth`` option, or --backend-auth for all)."""
        if spec.auth is None and not self.backend_auth:
            return spec
        named = spec.auth.server_name if spec.auth else None
        if named is None and not _is_address(spec.host):
            # The name we were given, not whatever reverse DNS says of its address:
            # someone who can redirect the address must not pass with another host key.
            named = spec.host
        initiator = Initiator(
            service=self.backend_service,
            server_name=named,
            client_keytab=self.client_keytab,
            client_principal=self.client_principal,
            timeout_s=self.auth_timeout,
        )
        return dataclasses.replace(spec, auth=initiator)

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        try:
            return parse_networks(self.allow)
        except ValueError as exc:
            raise ConfigError(f"--allow: {exc}") from exc

    def admin_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        try:
            return parse_networks(self.allow if self.admin_allow is None else self.admin_allow)
        except ValueError as exc:
            raise ConfigError(f"--admin-allow: {exc}") from exc

    def routing(self) -> CompilerRouting:
        """Which backends each compiler name may go to (balancer/routing/compilers.py)."""
        if self.compiler_identity not in IDENTITY_MODES:
            raise ConfigError(f"--compiler-identity must be one of {', '.join(IDENTITY_MODES)}")
        pins: dict[str, str] = {}
        for pin in self.pin_compiler:
            name, eq, identity = pin.partition("=")
            if not eq or not name or not identity:
                raise ConfigError(f"--pin-compiler {pin!r}: expected NAME=VERSION-or-DIGEST")
            pins[name] = identity
        if pins and self.compiler_identity != "pinned":
            raise ConfigError("--pin-compiler needs --compiler-identity pinned")
        return CompilerRouting(self.compiler_identity, pins)  # type: ignore[arg-type]

    def pool_settings(self) -> PoolSettings:
        return settings_from(self, PoolSettings)

    def fair_groups_file(self) -> GroupsFile | None:
        """The ``--fair-groups`` file, read (raises :class:`ConfigError` when it cannot be)."""
        if not self.fair_groups:
            return None
        groups = GroupsFile(self.fair_groups)
        try:
            groups.load()
        except GroupsError as exc:
            raise ConfigError(str(exc)) from exc
        return groups

    def dispatch_settings(self) -> DispatchSettings:
        return settings_from(self, DispatchSettings)

    def result_cache(self) -> ResultCache | None:
        """The stores asked for, their entries authenticated with the cache secret (a
        memory cache alone, which no one else can reach, with a random one)."""
        stores: list[Store] = []
        if self.cache_memory_mb > 0:
            stores.append(MemoryStore(self.cache_memory_mb * 1024 * 1024))
        if self.cache_redis:
            stores.append(
                RedisStore(
                    self.cache_redis,
                    password=self.redis_password(),
                    ttl_s=self.cache_ttl,
                    timeout_s=self.cache_timeout,
                )
            )
        if not stores:
            return None
        secret = self.cache_secret("--cache-redis", bool(self.cache_redis))
        return ResultCache(stores, secret or os.urandom(32))

    def redis_password(self) -> str | None:
        """The password in --cache-redis-password-file (None: none given). Raises
        :class:`ConfigError` for a bad file, or when the URL has a password too."""
        path = self.cache_redis_password_file
        if path is None:
            return None
        if self.cache_redis and parse_redis_url(self.cache_redis).password is not None:
            raise ConfigError(
                "--cache-redis names a password and --cache-redis-password-file gives one: "
                "keep it in the file only"
            )
        secret = read_secret_file(path, "--cache-redis-password-file")
        try:
            return secret.decode()
        except UnicodeDecodeError:
            raise ConfigError(f"--cache-redis-password-file {path}: not UTF-8 text") from None

    def validate(self) -> None:
        if not (self.backend or self.backends_from or self.backends_from_hosts):
            raise ConfigError("at least one --backend, --backends-from or --backends-from-hosts")
        self.backend_specs()
        self.dns_sources()
        if not 0 < self.dns_min_interval <= self.dns_max_interval <= 86400:
            raise ConfigError("--dns-min-interval and --dns-max-interval: 0 < min <= max <= a day")
        self.networks()
        self.admin_networks()
        if self.rise < 1 or self.fall < 1 or self.max_attempts < 1:
            raise ConfigError("--rise, --fall and --max-attempts must be at least 1")
        for name in (
            "poll_interval",
            "fast_poll_interval",
            "idle_poll_interval",
            "probe_interval",
            "idle_probe_interval",
            "report_wait",
            "probe_timeout",
            "queue_timeout",
            "attempt_deadline_min",
            "max_hedges",
            "hedge_min",
            "dashboard_viewers",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must not be negative")
        if self.hedge_after is not None and self.hedge_after < 0:
            raise ConfigError("--hedge-after must not be negative")
        if min(self.backend_idle_timeout, self.attempt_timeout, self.attempt_deadline_factor) <= 0:
            raise ConfigError(
                "--backend-idle-timeout, --attempt-timeout and --attempt-deadline-factor "
                "must be positive"
            )
        if 0 < self.tail_hedge < 1 or self.tail_hedge < 0:
            raise ConfigError("--tail-hedge must be 0 (off) or at least 1")
        if 0 < self.wait_for_faster < 1 or self.wait_for_faster < 0:
            raise ConfigError("--wait-for-faster must be 0 (off) or at least 1")
        if not isinstance(self.fair_share, bool):
            raise ConfigError("fair-share must be true or false (--fair-share on|off)")
        if not 0 < self.fair_memory <= 86400:
            raise ConfigError("--fair-memory must be above 0 and at most a day")
        self.fair_groups_file()
        self.routing()
        if self.cache_redis:
            try:
                parse_redis_url(self.cache_redis)
            except BadRedisURL as exc:
                raise ConfigError(f"--cache-redis {exc}") from exc
        self.cache_secret("--cache-redis", bool(self.cache_redis))
        self.redis_password()
        if self.cache_timeout <= 0:
            raise ConfigError("--cache-timeout must be positive")
        if self.reply_memory_mb < 1:
            raise ConfigError("--reply-memory-mb must be at least 1")
        if not 1 <= self.workers <= MAX_WORKERS:
            raise ConfigError(f"--workers must be 1 to {MAX_WORKERS}")
        check_common(self, {"--port": self.port, "--admin-port": self.admin_port})
        if self.client_keytab and not os.access(self.client_keytab, os.R_OK):
            raise ConfigError(f"--client-keytab {self.client_keytab}: not readable")
