"""``distlb-monitor``: measure every machine's compile latency and health; alert from cron.

Each machine (server, distccd or balancer) gets a few probe compiles, one after
another, each with a deadline; its report is read alongside. A machine is
``down`` when a probe fails, ``slow`` when its median latency passes the
threshold. Prints a table or JSON, can write Prometheus' textfile format, and
exits 1 when any machine is down or slow (the last line then starts ``ALERT:``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field

from client.cli import add_version_flag, tool_main
from client.discovery import DiscoveryError, Target
from client.probe_cli import add_discovery_arguments, discover
from client.prober import probe_one


@dataclass
class Health:
    target: Target
    state: str = "ok"
    latencies_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    slots: int | None = None
    busy: int | None = None
    compilers: dict[str, str] = field(default_factory=dict)

    @property
    def median_ms(self) -> float | None:
        return round(statistics.median(self.latencies_s) * 1000, 1) if self.latencies_s else None

    @property
    def max_ms(self) -> float | None:
        return round(max(self.latencies_s) * 1000, 1) if self.latencies_s else None


async def measure(target: Target, probes: int, timeout_s: float, compiler: str,
                  slow_ms: float) -> Health:  # fmt: skip
    health = Health(target)
    for _ in range(probes):
        result = await probe_one(target, compiler, timeout_s)
        health.slots, health.busy = result.slots, result.busy
        health.compilers = result.compilers
        if result.ok and result.seconds is not None:
            health.latencies_s.append(result.seconds)
        else:
            health.errors.append(result.error)
            break  # a failed probe says enough; do not wait out more deadlines
    if health.errors:
        health.state = "down"
    elif (health.median_ms or 0) > slow_ms:
        health.state = "slow"
    return health


def render_table(report: list[Health]) -> str:
    def shown(value: object) -> str:
        return "-" if value is None else str(value)

    rows = [("MACHINE", "STATE", "MEDIAN ms", "MAX ms", "SLOTS", "BUSY", "ERROR")]
    for h in report:
        error = h.errors[0] if h.errors else ""
        rows.append((h.target.label, h.state.upper(), shown(h.median_ms), shown(h.max_ms),
                     shown(h.slots), shown(h.busy), error))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1]
                     for r in rows).rstrip()  # fmt: skip


def disagreements(report: list[Health]) -> dict[str, dict[str, list[str]]]:
    """Compiler names that the machines run in more than one version: per name, each
    version and the machines that run it (what a balancer's ``majority`` would split)."""
    seen: dict[str, dict[str, list[str]]] = {}
    for h in report:
        for name, version in h.compilers.items():
            seen.setdefault(name, {}).setdefault(version, []).append(h.target.label)
    return {name: versions for name, versions in sorted(seen.items()) if len(versions) > 1}


def alert_line(report: list[Health]) -> str | None:
    bad = [h for h in report if h.state != "ok"]
    split = disagreements(report)
    if not bad and not split:
        return None
    parts = []
    if bad:
        names = ", ".join(
            f"{h.target.label} ({h.state}{': ' + h.errors[0] if h.errors else ''})" for h in bad
        )
        parts.append(f"{len(bad)} of {len(report)} machines bad: {names}")
    if split:
        parts.append("compiler versions differ: " + "; ".join(
            f"{name} ({' / '.join(f'{v} on {len(m)}' for v, m in sorted(versions.items()))})"
            for name, versions in split.items()
        ))  # fmt: skip
    return "ALERT: " + "; ".join(parts)


def textfile(report: list[Health]) -> str:
    """Prometheus' node-exporter textfile format."""
    lines = [
        "# HELP distlb_monitor_up 1 when the machine answered every probe compile",
        "# TYPE distlb_monitor_up gauge",
    ]
    for h in report:
        lines.append(f'distlb_monitor_up{{machine="{h.target.label}"}} {int(h.state != "down")}')
    lines += ["# HELP distlb_monitor_latency_seconds Median probe compile latency",
              "# TYPE distlb_monitor_latency_seconds gauge"]  # fmt: skip
    for h in report:
        if h.median_ms is not None:
            lines.append(
                f'distlb_monitor_latency_seconds{{machine="{h.target.label}"}} {h.median_ms / 1000}'
            )
    lines += ["# HELP distlb_monitor_slow 1 when the median latency passed the threshold",
              "# TYPE distlb_monitor_slow gauge"]  # fmt: skip
    for h in report:
        lines.append(f'distlb_monitor_slow{{machine="{h.target.label}"}} {int(h.state == "slow")}')
    return "\n".join(lines) + "\n"


def write_atomically(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".distlb-monitor-")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="distlb-monitor",
        description="Measure each machine's compile latency over a few probe compiles and "
        "read its status. Exit 0 when all are fine, 1 when any is down or slow, 2 on usage "
        "errors. Without a source, the machines in $DISTCC_HOSTS.",
    )
    add_discovery_arguments(p)
    p.add_argument("--probes", type=int, default=3, help="probe compiles per machine (3)")
    p.add_argument(
        "--timeout", type=float, default=5.0, metavar="S", help="deadline of each probe compile (5)"
    )
    p.add_argument(
        "--slow-ms", type=float, default=2000.0, help="median latency above this is slow (2000)"
    )
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("--textfile", metavar="PATH", help="also write Prometheus textfile metrics")
    add_version_flag(p)
    return p


async def _run(args: argparse.Namespace) -> int:
    args.deadline = args.timeout  # discovery's DNS timeout follows the probe deadline
    started = time.monotonic()
    try:
        targets = await discover(args)
    except DiscoveryError as exc:
        print(f"distlb-monitor: {exc}", file=sys.stderr)
        return 2
    report = list(await asyncio.gather(
        *(measure(t, args.probes, args.timeout, args.compiler, args.slow_ms) for t in targets)
    ))  # fmt: skip
    alert = alert_line(report) if targets else "ALERT: no machine found to monitor"
    if args.format == "json":
        print(json.dumps({
            "machines": [{
                "machine": h.target.label, "host": h.target.host, "port": h.target.port,
                "state": h.state, "median_ms": h.median_ms, "max_ms": h.max_ms,
                "slots": h.slots, "busy": h.busy, "errors": h.errors,
            } for h in report],
            "compiler_versions_differ": disagreements(report),
            "alert": alert,
            "elapsed_s": round(time.monotonic() - started, 3),
        }, indent=2))  # fmt: skip
    else:
        print(render_table(report))
        if alert:
            print(alert)
    if args.textfile:
        write_atomically(args.textfile, textfile(report))
    return 1 if alert else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not (args.hosts or args.pattern or args.srv or args.hosts_file or args.from_env):
        args.from_env = True
    return tool_main("distlb-monitor", lambda: _run(args), (ValueError, DiscoveryError))


if __name__ == "__main__":
    sys.exit(main())
