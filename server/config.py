"""One ServerConfig, from built-in defaults, a TOML file, then flags (in that order).

TOML keys are the flag names without the dashes (``job-lifetime = 600``;
``job_lifetime`` works too).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import tempfile
from dataclasses import dataclass, field

from cache import DiskStore, ResultCache
from daemon.access import parse_networks
from daemon.bounds import BoundsConfig, add_bounds_flags
from daemon.config import (
    LOG_LEVELS,
    ConfigError,
    add_cache_share_flag,
    add_operator_flags,
    check_common,
    fill_defaults,
    load_config,
)
from daemon.gss import AcceptorConfig, add_acceptor_flags
from daemon.judge import FORBIDDEN_COMPILER_NAMES
from daemon.judge_config import JudgeConfig, add_judge_flags
from daemon.secret_files import CacheSecretConfig, add_cache_secret_flag
from server.machine import OfferRules
from server.sandbox.launcher import DEFAULT_JOB_UIDS
from wire import Limits

__all__ = ["ConfigError", "ServerConfig", "load"]


@dataclass
class ServerConfig(AcceptorConfig, JudgeConfig, BoundsConfig, CacheSecretConfig):
    listen: str = "0.0.0.0"  # noqa: S104 (a compile server serves the network; --allow guards it)
    port: int = 3632
    stats_port: int = 3633
    agent_port: int | None = None
    jobs: int = field(default_factory=lambda: os.cpu_count() or 1)
    job_lifetime: float = 1200.0
    allow: list[str] = field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    compiler: list[str] = field(default_factory=list)
    user: str | None = None
    log_format: str = "auto"
    log_level: str = "info"
    tmp_dir: str = field(default_factory=tempfile.gettempdir)
    nice: int = 5
    io_timeout: float = 60.0
    request_timeout: float = 120.0
    kill_grace: float = 0.5
    shutdown_grace: float = 30.0
    max_source_mb: int = 256
    cache_dir: str | None = None
    cache_size: int = 1024
    """MB of the local disk cache (with --cache-dir)."""
    cache_share_across_dirs: bool = False
    pump: str = "on"
    pump_max_files: int = 20_000
    pump_max_mb: int = 512
    reply_memory_mb: int = 1024
    sandbox: str = "bwrap"
    job_uids: str = f"{DEFAULT_JOB_UIDS[0]}-{DEFAULT_JOB_UIDS[1]}"
    job_memory_mb: int = 4096
    job_file_mb: int = 1024
    job_processes: int = 64
    job_open_files: int = 1024
    offer_by_load: str = "on"
    foreign_load_slack: float = 0.5
    memory_per_job_mb: int = 256
    memory_pressure_limit: float = 10.0
    load_interval: float = 1.0
    status_allow: list[str] | None = None
    """Who may read /status, /metrics and the stats page (default: as --allow)."""
    check_config: str | None = None
    """``--check-config FILE``: check the config and exit (daemon/lifecycle.py)."""

    def status_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        try:
            return parse_networks(self.allow if self.status_allow is None else self.status_allow)
        except ValueError as exc:
            raise ConfigError(f"--status-allow: {exc}") from exc

    def job_uid_range(self) -> tuple[int, int]:
        try:
            first, last = (int(part) for part in self.job_uids.split("-", 1))
        except ValueError:
            raise ConfigError(f"--job-uids {self.job_uids!r}: give FIRST-LAST") from None
        if first <= 0 or last < first or last >= 2**32 - 1:
            raise ConfigError(f"--job-uids {self.job_uids!r} is not a range of non-root uids")
        if last - first + 1 < 2 * self.jobs:
            raise ConfigError(
                f"--job-uids {self.job_uids} holds fewer uids than twice --jobs (each slot has "
                "a job running and a sandbox ready for the next)"
            )
        return first, last

    def result_cache(self) -> ResultCache | None:
        """The local disk cache (with --cache-dir), its entries authenticated with the
        cache secret. Raises :class:`ConfigError` for a missing or bad secret."""
        secret = self.cache_secret("--cache-dir", bool(self.cache_dir))
        if not self.cache_dir or secret is None:
            return None
        return ResultCache([DiskStore(self.cache_dir, self.cache_size * 1024 * 1024)], secret)

    def wire_limits(self) -> Limits:
        """What one request may claim (pump mode's files included)."""
        return Limits(
            max_source_bytes=self.max_source_mb * 1024 * 1024,
            max_files=self.pump_max_files,
            max_pump_bytes=self.pump_max_mb * 1024 * 1024,
        )

    def offer_rules(self) -> OfferRules:
        """How the slots offered follow the machine's load (server/machine.py)."""
        return OfferRules(
            enabled=self.offer_by_load == "on",
            foreign_load_slack=self.foreign_load_slack,
            memory_per_job_mb=self.memory_per_job_mb,
            memory_pressure_limit=self.memory_pressure_limit,
        )

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        try:
            return parse_networks(self.allow)
        except ValueError as exc:
            raise ConfigError(f"--allow: {exc}") from exc

    def validate(self) -> None:
        if self.jobs < 1:
            raise ConfigError("--jobs must be at least 1")
        if self.job_lifetime <= 0:
            raise ConfigError("--job-lifetime must be positive")
        for name in self.compiler:
            if "/" in name or name in FORBIDDEN_COMPILER_NAMES:
                raise ConfigError(f"--compiler {name!r}: a compiler is a bare name, not a shell")
        if self.sandbox not in ("bwrap", "none"):
            raise ConfigError("--sandbox must be bwrap or none")
        if self.offer_by_load not in ("on", "off"):
            raise ConfigError("--offer-by-load must be on or off")
        if self.foreign_load_slack < 0 or self.memory_per_job_mb < 0:
            raise ConfigError("--foreign-load-slack and --memory-per-job-mb must not be negative")
        if not 0 < self.memory_pressure_limit <= 100:
            raise ConfigError("--memory-pressure-limit must be above 0 and at most 100 (%)")
        if not 0.05 <= self.load_interval <= 60:
            raise ConfigError("--load-interval must be 0.05 to 60 seconds")
        if self.pump not in ("on", "off"):
            raise ConfigError("--pump must be on or off")
        if self.pump_max_files < 1 or self.pump_max_mb < 1:
            raise ConfigError("--pump-max-files and --pump-max-mb must be at least 1")
        if min(self.job_memory_mb, self.job_file_mb, self.job_processes, self.job_open_files) < 0:
            raise ConfigError("--job-memory-mb, --job-file-mb, --job-processes, --job-open-files"
                              " must not be negative")  # fmt: skip
        if min(self.job_file_mb, self.job_processes, self.job_open_files) == 0:
            raise ConfigError("--job-file-mb, --job-processes and --job-open-files must be "
                              "at least 1 (only --job-memory-mb 0 means unbounded)")  # fmt: skip
        if self.user is not None and os.geteuid() != 0:
            raise ConfigError(
                "--user needs the server to start as root (it is the user compiles run as); "
                "unprivileged, each job is kept apart by its sandbox's namespaces instead"
            )
        if self.user is not None and self.sandbox == "bwrap":
            raise ConfigError(
                "--user is for --sandbox none: with --sandbox bwrap each job runs as a uid "
                "of its own, from --job-uids"
            )
        self.networks()
        self.job_uid_range()
        self.status_networks()
        self.cache_secret("--cache-dir", bool(self.cache_dir))
        check_common(
            self,
            {"--port": self.port, "--stats-port": self.stats_port, "--agent-port": self.agent_port},
        )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="distlb-server",
        description="A distccd-compatible compile server: job slots, busy rejection, "
        "job lifetime and disconnect kills, an argument policy, and status over HTTP.",
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("--config", metavar="FILE", help="TOML file with the same keys as the flags")
    add_operator_flags(p)
    p.add_argument("--listen", metavar="ADDR", help="address to listen on (default {default})")
    p.add_argument("--port", type=int, help="distcc port (default {default}; 0 picks one)")
    p.add_argument(
        "--stats-port", type=int, help="HTTP status port (default {default}; 0 picks one)"
    )
    p.add_argument("--agent-port", type=int, help="HAProxy agent-check port (default: off)")
    p.add_argument("--jobs", "-j", type=int, help="job slots (default: CPU count)")
    p.add_argument(
        "--job-lifetime",
        type=float,
        metavar="SECONDS",
        help="kill a compile that runs longer (default {default})",
    )
    p.add_argument(
        "--allow",
        action="append",
        metavar="CIDR",
        help="client networks allowed (repeatable; default loopback only)",
    )
    p.add_argument(
        "--compiler",
        action="append",
        metavar="NAME",
        help="allowed compiler, by bare name on PATH (repeatable; default: "
        "the names in /usr/lib/distcc plus gcc g++ cc c++ clang clang++)",
    )
    p.add_argument(
        "--user",
        help="with --sandbox none, when started as root: run compiles as this user "
        "(default: distcc, distccd or nobody, the first that exists)",
    )
    p.add_argument(
        "--log-format",
        choices=["json", "console", "auto"],
        help="json, console, or auto (console on a terminal; default)",
    )
    p.add_argument("--log-level", choices=LOG_LEVELS)
    p.add_argument("--tmp-dir", metavar="DIR", help="where job temp dirs go (default $TMPDIR)")
    p.add_argument("--nice", type=int, help="niceness added to compilers (default {default})")
    p.add_argument(
        "--io-timeout",
        type=float,
        metavar="SECONDS",
        help="longest wait for the next byte from a client (default {default})",
    )
    p.add_argument(
        "--request-timeout",
        type=float,
        metavar="SECONDS",
        help="longest time to receive a whole request (default {default})",
    )
    p.add_argument(
        "--kill-grace",
        type=float,
        metavar="SECONDS",
        help="SIGTERM to SIGKILL delay when killing a compile (default {default})",
    )
    p.add_argument(
        "--shutdown-grace",
        type=float,
        metavar="SECONDS",
        help="on SIGTERM, how long running jobs may finish (default {default})",
    )
    p.add_argument(
        "--max-source-mb",
        type=int,
        metavar="MB",
        help="largest preprocessed source accepted (default {default})",
    )
    p.add_argument(
        "--cache-dir", metavar="DIR", help="keep a local disk cache of results here (default: off)"
    )
    p.add_argument(
        "--cache-size", type=int, metavar="MB", help="bound of the disk cache (default {default})"
    )
    add_cache_secret_flag(p, "--cache-dir")
    add_cache_share_flag(p)
    add_acceptor_flags(p, "compile")
    add_judge_flags(p)
    add_bounds_flags(p)
    add_sandbox_flags(p)
    add_pump_flags(p)
    p.add_argument(
        "--reply-memory-mb",
        type=int,
        metavar="MB",
        help="replies held for slow readers after their compile; past it a job keeps its "
        "slot until its reply is sent (default {default})",
    )
    fill_defaults(p, ServerConfig)
    return p


def add_pump_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--pump",
        choices=["on", "off"],
        help="serve distcc's pump mode (protocol 3: the client's sources and headers, "
        "preprocessed here, in the sandbox at their own paths; needs --sandbox bwrap). "
        "off: such a request is answered with why, and its client compiles that file "
        "itself (default {default})",
    )
    p.add_argument(
        "--pump-max-files",
        type=int,
        metavar="N",
        help="files and links one pump request may send (default {default})",
    )
    p.add_argument(
        "--pump-max-mb",
        type=int,
        metavar="MB",
        help="bytes all files of one pump request may hold, inflated (default {default})",
    )


def add_sandbox_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sandbox",
        choices=["bwrap", "none"],
        help="run each compile under bubblewrap: only the toolchain (read-only) and the "
        "job's directory, no network, its own pids and uid (default {default}; the server "
        "checks at start that it works). none: a warning at start, and /status says so",
    )
    p.add_argument(
        "--job-uids",
        metavar="FIRST-LAST",
        help="when root, each job runs as a uid of its own from this range, which no "
        f"account may use (default {DEFAULT_JOB_UIDS[0]}-{DEFAULT_JOB_UIDS[1]})",
    )
    p.add_argument(
        "--offer-by-load",
        choices=["on", "off"],
        help="offer fewer slots while the machine is busy with other work or short of "
        "memory, and turn a job away when less memory is free than it may need "
        '(docs/operations.md, "What a server offers"; default {default})',
    )
    p.add_argument(
        "--foreign-load-slack",
        type=float,
        metavar="CPUS",
        help="foreign CPU demand (runnable tasks not the server's) ignored; each CPU's "
        "worth beyond it takes one slot away ({default})",
    )
    p.add_argument(
        "--memory-per-job-mb",
        type=int,
        metavar="MB",
        help="available memory (MemAvailable) a new job needs: a slot is offered per MB "
        "free, and a job is turned away when less is free ({default}; 0: off)",
    )
    p.add_argument(
        "--memory-pressure-limit",
        type=float,
        metavar="PCT",
        help="no new job while the kernel's memory pressure (PSI full, 10 s) is at least "
        "this, in percent ({default})",
    )
    p.add_argument(
        "--load-interval",
        type=float,
        metavar="S",
        help="how often the machine's load and memory are read ({default})",
    )
    p.add_argument(
        "--job-memory-mb",
        type=int,
        metavar="MB",
        help="address space a job may use (RLIMIT_AS; default {default}; 0: unbounded)",
    )
    p.add_argument(
        "--job-file-mb",
        type=int,
        metavar="MB",
        help="largest file a job may write (default {default})",
    )
    p.add_argument(
        "--job-processes", type=int, metavar="N", help="processes a job may run (default {default})"
    )
    p.add_argument(
        "--job-open-files",
        type=int,
        metavar="N",
        help="files a job may hold open (default {default})",
    )
    p.add_argument(
        "--status-allow",
        action="append",
        metavar="CIDR",
        help="who may connect to the stats port (/status, /metrics, the distccd page), "
        "checked at accept (repeatable; default: as --allow): they name compilers, "
        "paths and files",
    )


def load(argv: list[str] | None = None) -> ServerConfig:
    """Defaults, then the TOML file, then flags. Raises :class:`ConfigError`."""
    config = load_config(ServerConfig, build_parser(), argv)
    config.validate()
    return config
