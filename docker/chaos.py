#!/opt/distlb/bin/python
"""distlb-chaos: latency, timeouts and resets on the compose farm's servers during load.

Runs in the compose farm (``docker-compose run --rm chaos``). It drives Toxiproxy,
which sits between the balancers and the servers, through ``toxiproxy-python``, in
phases of equal length: calm; 300 ms latency on server1; server2 stalled (Toxiproxy's
``timeout`` toxic: data stops, the connection hangs); server3's connections reset;
everything healed. With ``--vip`` it sends its own bounded load through the VIP
(distlb-loadgen's engine) while it does so. After each phase it prints what the farm
did, from each balancer's ``/status``; at the end, the load's summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from toxiproxy import Toxiproxy

from client.cli import add_version_flag
from client.loadgen import Summary, run_load

STATUS_TIMEOUT_S = 2.0


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"want HOST:PORT, got {text!r}")
    return host, int(port)


def balancer_report(name: str, admin: tuple[str, int]) -> list[str]:
    """A few lines on one balancer: healthz, totals, and each backend's state and work."""
    base = f"http://{admin[0]}:{admin[1]}"
    try:
        url = f"{base}/status"  # http, built here from a host and port
        with urllib.request.urlopen(url, timeout=STATUS_TIMEOUT_S) as response:  # noqa: S310
            status: dict[str, Any] = json.loads(response.read())
    except (OSError, ValueError) as exc:
        return [f"  {name}: no status ({exc})"]
    totals = status["totals"]
    lines = [
        f"  {name}: ok={totals['ok']} failed={totals['failed']} "
        f"turned_away={totals['turned_away']} retries={totals['retries']} "
        f"hedges={totals['hedges']} healthy_backends={totals['healthy_backends']}"
    ]
    for backend in status["backends"]:
        lines.append(
            f"    {backend['name']:<22} {backend['state']:<5} ok={backend['ok']:<6} "
            f"failures={backend['failures']:<4} p50_ms={backend['p50_ms']} "
            f"last_error={backend['last_error'] or '-'}"
        )
    return lines


class Chaos:
    """The phases, each a change to Toxiproxy's toxics."""

    def __init__(self, toxiproxy_at: tuple[str, int]) -> None:
        self.server = Toxiproxy()
        self.server.update_api_consumer(*toxiproxy_at)

    def _proxy(self, name: str) -> Any:
        proxy = self.server.get_proxy(name)
        if proxy is None:
            raise SystemExit(f"distlb-chaos: Toxiproxy has no proxy {name!r}")
        return proxy

    def calm(self) -> None:
        self.server.reset()

    def latency(self) -> None:
        proxy = self._proxy("server1")
        for stream in ("upstream", "downstream"):
            proxy.add_toxic(type="latency", stream=stream, name=f"latency_{stream}",
                            attributes={"latency": 300, "jitter": 50})  # fmt: skip

    def stall(self) -> None:
        # timeout=0: no data passes and the connection is never closed: a black hole.
        for name in ("server2", "server2-status"):
            self._proxy(name).add_toxic(type="timeout", name="stall", attributes={"timeout": 0})

    def resets(self) -> None:
        self._proxy("server3").add_toxic(type="reset_peer", name="reset",
                                         attributes={"timeout": 200})  # fmt: skip

    def phases(self) -> list[tuple[str, Callable[[], None]]]:
        return [
            ("calm", self.calm),
            ("server1 +300 ms latency each way", self.latency),
            ("server2 stalled (timeout toxic)", self.stall),
            ("server3 connections reset after 200 ms", self.resets),
            ("healed", self.calm),
        ]


async def run(args: argparse.Namespace) -> int:
    chaos = Chaos(args.toxiproxy)
    phases = chaos.phases()
    phase_s = args.duration / len(phases)
    load: asyncio.Task[Summary] | None = None
    if args.vip:
        load = asyncio.create_task(
            run_load(*args.vip, jobs=args.jobs, concurrency=args.concurrency,
                     duration_s=args.duration, size_bytes=args.size_kb * 1024, protocol=2)
        )  # fmt: skip
    started = time.monotonic()
    for name, change in phases:
        await asyncio.to_thread(change)
        print(f"[{time.monotonic() - started:6.1f} s] phase: {name}", flush=True)
        await asyncio.sleep(phase_s)
        for index, admin in enumerate(args.balancer):
            lines = await asyncio.to_thread(balancer_report, f"balancer {index + 1}", admin)
            print("\n".join(lines), flush=True)
    await asyncio.to_thread(chaos.calm)
    if load is None:
        return 0
    summary = await load
    print("load through the VIP:\n" + summary.table(), flush=True)
    return 0 if summary.failed == 0 and summary.compile_error == 0 else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="distlb-chaos", description=__doc__.splitlines()[0])
    p.add_argument("--toxiproxy", type=_host_port, default=("toxiproxy", 8474))
    p.add_argument("--balancer", type=_host_port, action="append", default=[],
                   help="a balancer's admin HOST:PORT (repeatable)")  # fmt: skip
    p.add_argument("--vip", type=_host_port, help="send load through this HOST:PORT too")
    p.add_argument("--duration", type=float, default=120.0, help="seconds, all phases")
    p.add_argument("--jobs", type=int, default=5000, help="most load jobs")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--size-kb", type=int, default=16)
    add_version_flag(p)
    args = p.parse_args(argv)
    if not 0 < args.duration <= 3600:
        p.error("--duration must be in (0, 3600]")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
