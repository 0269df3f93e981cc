"""One ServerConfig, from built-in defaults, a TOML file, then flags (in that order).

TOML keys are the flag names without the dashes (``job-lifetime = 600``;
``job_lifetime`` works too).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import shutil
import tempfile
from dataclasses import dataclass, field

from client.access import parse_networks
from client.cli import ConfigError, load_config
from client.gss import AcceptorConfig, add_acceptor_flags
from daemon.judge import FORBIDDEN_COMPILER_NAMES
from daemon.judge_config import JudgeConfig, add_judge_flags

__all__ = ["ConfigError", "ServerConfig", "load"]

MASQUERADE_DIR = "/usr/lib/distcc"
DEFAULT_COMPILER_NAMES = ("gcc", "g++", "cc", "c++", "clang", "clang++")


@dataclass
class ServerConfig(AcceptorConfig, JudgeConfig):
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
        if self.log_format not in ("auto", "json", "console"):
            raise ConfigError("--log-format must be json, console or auto")
        self.networks()


def search_path() -> str:
    """PATH without distcc's masquerade dir: there, gcc would be distcc itself."""
    parts = os.environ.get("PATH", os.defpath).split(os.pathsep)
    return os.pathsep.join(p for p in parts if os.path.realpath(p) != MASQUERADE_DIR)


def default_compiler_names() -> list[str]:
    names = list(DEFAULT_COMPILER_NAMES)
    with contextlib.suppress(OSError):
        names += sorted(os.listdir(MASQUERADE_DIR))
    return list(dict.fromkeys(names))


def resolve_compilers(names: list[str], explicit: bool) -> dict[str, str]:
    """Map each allowlisted name to the binary that runs for it.

    Names given explicitly must exist; defaults that are not installed are skipped. An
    explicit name also admits its target-prefixed aliases (``x86_64-linux-gnu-gcc`` for
    ``gcc``) that are the very same binary: Debian's client rewrites ``gcc`` to that
    name before sending, so ``--compiler gcc`` alone would refuse every gcc job.
    """
    path = search_path()
    resolved: dict[str, str] = {}
    for name in names:
        found = shutil.which(name, path=path)
        if found is None or os.path.basename(os.path.realpath(found)) == "distcc":
            if explicit:
                raise ConfigError(f"--compiler {name!r} is not on PATH")
            continue
        resolved[name] = os.path.abspath(found)
        if explicit:
            for alias, binary in same_binary_aliases(name, found, path).items():
                resolved.setdefault(alias, binary)
    if not resolved:
        raise ConfigError("no allowed compiler is installed")
    return resolved


def same_binary_aliases(name: str, found: str, path: str) -> dict[str, str]:
    """``TARGET-name`` on ``path`` that resolve to the same file as ``found``."""
    target = os.path.realpath(found)
    aliases: dict[str, str] = {}
    for directory in path.split(os.pathsep):
        with contextlib.suppress(OSError):
            for entry in os.listdir(directory or "."):
                alias = os.path.join(directory, entry)
                if (
                    entry.endswith(f"-{name}")
                    and entry.count("-") >= 2  # a GNU target triplet, not e.g. "c99-gcc"
                    and entry not in aliases
                    and os.path.realpath(alias) == target
                ):
                    aliases[entry] = os.path.abspath(alias)
    return aliases


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="distlb-server",
        description="A distccd-compatible compile server: job slots, busy rejection, "
        "job lifetime and disconnect kills, an argument policy, and status over HTTP.",
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("--config", metavar="FILE", help="TOML file with the same keys as the flags")
    p.add_argument("--listen", metavar="ADDR", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, help="distcc port (default 3632; 0 picks one)")
    p.add_argument("--stats-port", type=int, help="HTTP status port (default 3633; 0 picks one)")
    p.add_argument("--agent-port", type=int, help="HAProxy agent-check port (default: off)")
    p.add_argument("--jobs", "-j", type=int, help="job slots (default: CPU count)")
    p.add_argument(
        "--job-lifetime",
        type=float,
        metavar="SECONDS",
        help="kill a compile that runs longer (default 1200)",
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
        help="when started as root, run as this user "
        "(default: distcc, distccd or nobody, the first that exists)",
    )
    p.add_argument(
        "--log-format",
        choices=["json", "console", "auto"],
        help="json, console, or auto (console on a terminal; default)",
    )
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--tmp-dir", metavar="DIR", help="where job temp dirs go (default $TMPDIR)")
    p.add_argument("--nice", type=int, help="niceness added to compilers (default 5)")
    p.add_argument(
        "--io-timeout",
        type=float,
        metavar="SECONDS",
        help="longest wait for the next byte from a client (default 60)",
    )
    p.add_argument(
        "--request-timeout",
        type=float,
        metavar="SECONDS",
        help="longest time to receive a whole request (default 120)",
    )
    p.add_argument(
        "--kill-grace",
        type=float,
        metavar="SECONDS",
        help="SIGTERM to SIGKILL delay when killing a compile (default 0.5)",
    )
    p.add_argument(
        "--shutdown-grace",
        type=float,
        metavar="SECONDS",
        help="on SIGTERM, how long running jobs may finish (default 30)",
    )
    p.add_argument(
        "--max-source-mb",
        type=int,
        metavar="MB",
        help="largest preprocessed source accepted (default 256)",
    )
    p.add_argument(
        "--cache-dir", metavar="DIR", help="keep a local disk cache of results here (default: off)"
    )
    p.add_argument(
        "--cache-size", type=int, metavar="MB", help="bound of the disk cache (default 1024)"
    )
    add_acceptor_flags(p, "compile")
    add_judge_flags(p)
    return p


def load(argv: list[str] | None = None) -> ServerConfig:
    """Defaults, then the TOML file, then flags. Raises :class:`ConfigError`."""
    config = load_config(ServerConfig, build_parser(), argv)
    config.validate()
    return config
