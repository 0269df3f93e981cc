"""``distlb-probe``: find distcc servers and list those that compile by a deadline.

A successor to distcc's ``lsdistcc``: servers come from a DNS name pattern,
DNS SRV records, a hosts file, DISTCC_HOSTS or the command line; all are probed
at once with a trivial compile, and only those that answered correctly within
the deadline are listed, ready to use as DISTCC_HOSTS.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from client.cli import add_version_flag, tool_main
from client.discovery import (
    DEFAULT_PORT,
    DiscoveryError,
    Target,
    from_pattern,
    from_srv,
    parse_host_entry,
    parse_hosts_text,
    unique,
)
from client.prober import ProbeResult, probe_all


def add_discovery_arguments(p: argparse.ArgumentParser) -> None:
    """Where the servers come from: shared by distlb-probe and distlb-monitor."""
    p.add_argument("hosts", nargs="*", metavar="HOST[:PORT]", help="servers to probe")
    p.add_argument(
        "--pattern",
        metavar="FMT",
        help="DNS names FMT%%1, FMT%%2, ... like lsdistcc (e.g. distcc%%d.example.com)",
    )
    p.add_argument("--srv", metavar="DOMAIN", help="servers from _distcc._tcp.DOMAIN SRV records")
    p.add_argument("--hosts-file", metavar="FILE", help="a file in DISTCC_HOSTS syntax")
    p.add_argument("--from-env", action="store_true", help="the servers in $DISTCC_HOSTS")
    p.add_argument("--dns-server", metavar="ADDR[:PORT]", help="ask this DNS server")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port for --pattern names (3632)")
    p.add_argument(
        "--gap", type=int, default=0, help="--pattern: missing names tolerated before stopping (0)"
    )
    p.add_argument("--max-names", type=int, default=64, help="--pattern: most names tried (64)")
    p.add_argument("--compiler", default="gcc", help="compiler the probe asks for (gcc)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="distlb-probe",
        description="Discover distcc servers and list only those that finish a trivial "
        "compile by the deadline. Exit 0 when at least one qualified, 1 when none did, "
        "2 on a usage or discovery error.",
    )
    add_discovery_arguments(p)
    p.add_argument(
        "--deadline",
        type=float,
        default=1.0,
        metavar="S",
        help="a server must finish the probe compile within S seconds (1.0)",
    )
    p.add_argument(
        "--format",
        choices=["distcc-hosts", "lines", "json"],
        default="distcc-hosts",
        help="one DISTCC_HOSTS line (default), one host per line, or JSON",
    )
    p.add_argument(
        "--options",
        default="",
        metavar="OPTS",
        help="host options appended in distcc-hosts output, e.g. lzo",
    )
    p.add_argument("--names", action="store_true", help="print DNS names instead of addresses")
    add_version_flag(p)
    return p


async def discover(args: argparse.Namespace) -> list[Target]:
    targets: list[Target] = []
    dns_timeout = max(1.0, args.deadline)
    if args.pattern:
        targets += await from_pattern(
            args.pattern,
            port=args.port,
            gap=args.gap,
            dns_server=args.dns_server,
            timeout_s=dns_timeout,
            max_names=args.max_names,
        )
    if args.srv:
        targets += await from_srv(args.srv, dns_server=args.dns_server, timeout_s=dns_timeout)
    if args.hosts_file:
        try:
            with open(args.hosts_file, encoding="utf-8") as fh:  # noqa: ASYNC230 (once, tiny)
                targets += parse_hosts_text(fh.read())
        except (OSError, ValueError) as exc:
            raise DiscoveryError(f"--hosts-file: {exc}") from exc
    if args.from_env:
        targets += parse_hosts_text(os.environ.get("DISTCC_HOSTS", ""))
    for word in args.hosts:
        target = parse_host_entry(word)
        if target is not None:
            targets.append(target)
    return unique(targets)


def host_word(result: ProbeResult, names: bool, options: str) -> str:
    target = result.target
    host = target.name if names and target.name else target.host
    if ":" in host:
        host = f"[{host}]"
    word = host if target.port == DEFAULT_PORT else f"{host}:{target.port}"
    if result.slots:
        word += f"/{result.slots}"
    # The options it was written with, then --options (once each): pasted into
    # DISTCC_HOSTS, the line must mean what the user wrote (,lzo ,cpp ,auth).
    wanted = [*target.options, *(o for o in options.split(",") if o)]
    return word + "".join(f",{o}" for o in dict.fromkeys(wanted))


def render(results: list[ProbeResult], args: argparse.Namespace, seconds: float) -> str:
    good = [r for r in results if r.ok]
    if args.format == "json":
        return json.dumps(
            {
                "qualified": [host_word(r, args.names, "") for r in good],
                "servers": [
                    {
                        "host": r.target.host,
                        "port": r.target.port,
                        "name": r.target.name,
                        "ok": r.ok,
                        "ms": round(r.seconds * 1000, 1) if r.seconds is not None else None,
                        "slots": r.slots,
                        "error": r.error,
                    }
                    for r in results
                ],
                "deadline_s": args.deadline,
                "elapsed_s": round(seconds, 3),
            },
            indent=2,
        )
    words = [host_word(r, args.names, args.options) for r in good]
    return " ".join(words) if args.format == "distcc-hosts" else "\n".join(words)


async def _run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    try:
        targets = await discover(args)
    except DiscoveryError as exc:
        print(f"distlb-probe: {exc}", file=sys.stderr)
        return 2
    results = await probe_all(targets, args.compiler, args.deadline)
    print(render(results, args, time.monotonic() - started))
    for result in results:
        if not result.ok:
            print(f"distlb-probe: {result.target.label} left out: {result.error}", file=sys.stderr)
    return 0 if any(r.ok for r in results) else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not (args.hosts or args.pattern or args.srv or args.hosts_file or args.from_env):
        if os.environ.get("DISTCC_HOSTS"):
            args.from_env = True
        else:
            args.pattern = "distcc%d"  # lsdistcc's default
    return tool_main("distlb-probe", lambda: _run(args), (ValueError, DiscoveryError))


if __name__ == "__main__":
    sys.exit(main())
