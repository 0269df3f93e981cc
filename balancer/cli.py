"""distlb-balancer's command line (floor 4): its flags, what each says (defaults and
types come from :class:`balancer.config.BalancerConfig`, daemon/config.py
``fill_defaults``), and :func:`load`, the config from defaults, file and flags.

What lives here: the parser and loading. What must not: a default or a check of a value
(``config.py``), or starting anything (``main.py``)."""

from __future__ import annotations

import argparse

from balancer.config import BalancerConfig
from balancer.routing.compilers import IDENTITY_MODES
from daemon.bounds import add_bounds_flags
from daemon.config import (
    LOG_LEVELS,
    add_cache_share_flag,
    add_operator_flags,
    fill_defaults,
    load_config,
)
from daemon.gss import add_acceptor_flags
from daemon.judge_config import add_judge_flags
from daemon.secret_files import add_cache_secret_flag


def _on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError("want on or off")
    return text == "on"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="distlb-balancer",
        description="A stateless distcc proxy: each job goes to the least-loaded healthy "
        "backend; refused jobs are retried elsewhere, hung backends are hedged around.",
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("--config", metavar="FILE", help="TOML file with the same keys as the flags")
    add_operator_flags(p)
    p.add_argument("--listen", metavar="ADDR", help="address to listen on (default {default})")
    p.add_argument("--port", type=int, help="distcc port (default {default}; 0 picks one)")
    p.add_argument(
        "--admin-port",
        type=int,
        help="HTTP: / dashboard, /status, /metrics, /healthz (default {default})",
    )
    p.add_argument(
        "--admin-allow",
        action="append",
        metavar="CIDR",
        help="who may connect to the admin port, checked at accept (and /healthz from "
        "this machine too; repeatable; default: as --allow): the dashboard names the "
        "files being compiled and who compiles them",
    )
    p.add_argument(
        "--dashboard-viewers",
        type=int,
        metavar="N",
        help="live dashboard viewers at once; more get polling (default {default})",
    )
    p.add_argument(
        "--compiler-identity",
        choices=IDENTITY_MODES,
        help="for each compiler name, send jobs only to the backends that run the same "
        "version: majority (the version with the most slots), pinned (--pin-compiler), "
        "or any (default {default})",
    )
    p.add_argument(
        "--pin-compiler",
        action="append",
        metavar="NAME=VERSION",
        help="with --compiler-identity pinned: jobs for NAME go only to backends whose "
        "NAME's version line holds VERSION, or whose binary's digest starts with it "
        "(repeatable)",
    )
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="processes serving the distcc port together (SO_REUSEPORT), sharing what "
        "they hold on each backend; the first serves the admin port for all (default {default})",
    )
    p.add_argument(
        "--backend",
        action="append",
        metavar="SPEC",
        help="HOST:PORT[,status=PORT][,kind=distlb|distccd][,weight=W][,slots=N][,auth[=NAME]] "
        "(repeatable; distlb's status port defaults to PORT+1)",
    )
    p.add_argument(
        "--backends-from",
        action="append",
        metavar="SRV-NAME",
        help="backends from DNS SRV records (_distcc._tcp.NAME, or the full SRV name): each "
        "target's addresses at its port, its weight; asked again at the records' TTL "
        "(repeatable; beside --backend)",
    )
    p.add_argument(
        "--backends-from-hosts",
        action="append",
        metavar="NAME:PORT[,options]",
        help="every A/AAAA address of NAME is a backend at PORT, with --backend's options "
        "(repeatable)",
    )
    p.add_argument("--dns-server", metavar="ADDR[:PORT]", help="ask this DNS server "
                   "(default: the system's resolvers)")  # fmt: skip
    p.add_argument(
        "--dns-min-interval",
        type=float,
        metavar="S",
        help="ask DNS again no sooner than this, whatever the TTL ({default}; also after a "
        "failure, which keeps the last good answer)",
    )
    p.add_argument(
        "--dns-max-interval", type=float, metavar="S", help="and no later than this ({default})"
    )
    p.add_argument(
        "--allow",
        action="append",
        metavar="CIDR",
        help="client networks allowed (repeatable; default loopback only)",
    )
    p.add_argument("--poll-interval", type=float, metavar="S", help="report polling ({default})")
    p.add_argument(
        "--fast-poll-interval",
        type=float,
        metavar="S",
        help="report polling while jobs wait for a slot ({default})",
    )
    p.add_argument(
        "--idle-poll-interval",
        type=float,
        metavar="S",
        help="plain report polls of a backend no job of ours runs on while none waits "
        "({default}; backends without the long poll)",
    )
    p.add_argument("--probe-interval", type=float, metavar="S", help="health probes ({default})")
    p.add_argument(
        "--idle-probe-interval",
        type=float,
        metavar="S",
        help="health probes of a backend whose reports keep coming "
        "({default}; finished jobs count)",
    )
    p.add_argument(
        "--report-wait",
        type=float,
        metavar="S",
        help="how long a distlb server may hold a report request while nothing changes "
        "(a long poll; {default}; 0: poll every --poll-interval)",
    )
    p.add_argument("--probe-timeout", type=float, metavar="S", help="probe deadline ({default})")
    p.add_argument("--probe-compiler", metavar="NAME", help="compiler probes ask for ({default})")
    p.add_argument("--rise", type=int, help="good probes to come back into rotation ({default})")
    p.add_argument("--fall", type=int, help="failures to leave rotation ({default})")
    p.add_argument(
        "--queue-timeout",
        type=float,
        metavar="S",
        help="wait this long for a free slot, then turn the client away ({default}; at once "
        "when every backend is out of rotation after a failed check)",
    )
    p.add_argument(
        "--max-attempts",
        type=int,
        help="backends that may fail one job ({default}; a turn-away is no failure)",
    )
    p.add_argument(
        "--hedge-after",
        type=float,
        metavar="S",
        help="send a late job to a second backend after S "
        "(default: max(--hedge-min, 3 x the backend's p95))",
    )
    p.add_argument(
        "--hedge-min", type=float, metavar="S", help="smallest automatic hedge ({default})"
    )
    p.add_argument(
        "--tail-hedge",
        type=float,
        metavar="X",
        help="while no job waits for a slot, also send a running job to a free backend "
        "that would finish it X times sooner ({default}; 0: off)",
    )
    p.add_argument(
        "--wait-for-faster",
        type=float,
        metavar="X",
        help="a big job waits for one of our jobs on a faster backend to end, rather than "
        "start on a slower free one, when it would finish X times sooner there ({default}; 0: off)",
    )
    p.add_argument("--connect-timeout", type=float, metavar="S", help="to a backend ({default})")
    p.add_argument(
        "--backend-idle-timeout",
        type=float,
        metavar="S",
        help="sending a job, or receiving its reply once begun, may take this long plus a "
        "second per MiB; a backend that hangs or trickles mid-transfer fails that "
        "attempt ({default})",
    )
    p.add_argument(
        "--attempt-timeout",
        type=float,
        metavar="S",
        help="longest wait for one backend's reply ({default}: beyond a server's job lifetime)",
    )
    p.add_argument(
        "--attempt-deadline-factor",
        type=float,
        metavar="K",
        help="an attempt on a backend with a latency history fails after K times its p99, "
        "scaled by the job's size, and never sooner than --attempt-deadline-min ({default})",
    )
    p.add_argument("--attempt-deadline-min", type=float, metavar="S", help="see above ({default})")
    p.add_argument(
        "--fair-share",
        type=_on_off,
        metavar="on|off",
        help="while jobs wait for slots, a freed slot goes to the client (its principal, "
        "address or --fair-groups group) that used the least compile time recently, over "
        "its weight; off: to the job waiting longest (default on)",
    )
    p.add_argument(
        "--fair-memory",
        type=float,
        metavar="S",
        help="how long a client's compile time counts for its share: it decays by "
        "e^(-age/S) ({default})",
    )
    p.add_argument(
        "--fair-groups",
        metavar="FILE",
        help="TOML: groups of principals and CIDRs that share as one, with weights "
        '(docs/operations.md, "Fair share"); re-read within a second of a change',
    )
    p.add_argument(
        "--max-hedges",
        type=int,
        metavar="N",
        help="late and tail hedges per job ({default}); a job whose backends left rotation is sent "
        "elsewhere at once, within --max-attempts",
    )
    p.add_argument(
        "--io-timeout",
        type=float,
        metavar="S",
        help="longest wait for the next byte of a request ({default})",
    )
    p.add_argument(
        "--request-timeout",
        type=float,
        metavar="S",
        help="longest time to receive a whole request ({default})",
    )
    p.add_argument(
        "--max-source-mb",
        type=int,
        metavar="MB",
        help="largest preprocessed source accepted ({default})",
    )
    p.add_argument(
        "--reply-memory-mb",
        type=int,
        metavar="MB",
        help="replies held for clients until they have taken them (one that does not read "
        "holds its reply up to --io-timeout); a reply past it is not sent, and its client "
        "compiles locally ({default})",
    )
    p.add_argument(
        "--shutdown-grace",
        type=float,
        metavar="S",
        help="on SIGTERM, how long jobs in flight may finish ({default})",
    )
    p.add_argument(
        "--cache-redis",
        metavar="URL",
        help="shared result cache: redis://HOST:PORT[/DB], a cluster "
        "redis+cluster://HOST:PORT[,HOST:PORT...], or a master found by Sentinel "
        "redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER[/DB] (default: off)",
    )
    p.add_argument(
        "--cache-redis-password-file",
        metavar="FILE",
        help="Redis's password (requirepass, or the password of the user named in the URL: "
        "redis://USER@HOST:PORT), read at start from FILE, readable by this user only "
        "(default: none, or the URL's)",
    )
    add_cache_secret_flag(p, "--cache-redis")
    p.add_argument(
        "--cache-memory-mb",
        type=int,
        metavar="MB",
        help="a local in-memory cache in front of Redis (default {default}: off)",
    )
    p.add_argument(
        "--cache-ttl",
        type=int,
        metavar="S",
        help="seconds until Redis entries expire ({default}: 7 days)",
    )
    p.add_argument(
        "--cache-timeout",
        type=float,
        metavar="S",
        help="longest wait for Redis before the cache is bypassed ({default})",
    )
    p.add_argument(
        "--cache-trust-unsandboxed",
        action="store_const",
        const=True,
        help="also store results of backends that compile without a sealed sandbox (a "
        "distlb server with --sandbox none, or a compiler whose jobs run in its shared "
        "sandbox); by default only sealed compilers' results are shared",
    )
    add_cache_share_flag(p)
    p.add_argument("--log-format", choices=["json", "console", "auto"])
    p.add_argument("--log-level", choices=LOG_LEVELS)
    add_acceptor_flags(p, "use the balancer")
    add_judge_flags(p, compiler_names=True)
    add_bounds_flags(p)
    p.add_argument(
        "--backend-auth",
        action="store_const",
        const=True,
        help="authenticate to every backend with GSSAPI (per backend: the spec option auth)",
    )
    p.add_argument(
        "--backend-service",
        metavar="NAME",
        help="service of the backends' principals, service@host as DISTCC_PRINCIPAL ({default})",
    )
    p.add_argument(
        "--client-keytab",
        metavar="FILE",
        help="our own key for authenticating to backends (default: KRB5_CLIENT_KTNAME "
        "or the credential cache KRB5CCNAME)",
    )
    p.add_argument(
        "--client-principal",
        metavar="NAME",
        help="which principal of --client-keytab to use (default: its first)",
    )
    fill_defaults(p, BalancerConfig)
    return p


def load(argv: list[str] | None = None) -> BalancerConfig:
    """Defaults, then the TOML file, then flags. Raises :class:`ConfigError`."""
    config = load_config(BalancerConfig, build_parser(), argv)
    config.validate()
    return config
