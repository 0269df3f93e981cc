"""Backends from DNS (issue 31): what re-resolving a farm's SRV records costs the
balancer, in-process, against Debian's real dnsmasq serving ``--records`` SRV records
(each target with its A record).

Each round asks once as the balancer does (balancer/pool/discovery.py ``Discovery``: the
SRV query, the targets' addresses, the backend specs) and times the CPU it took; the
cost is that CPU over the interval between asks (``--interval``, 5 s as the issue asks,
the default ``--dns-min-interval``). Goal: at most 1 % of a core. Prints the median and
spread of the rounds and writes bench/results/dns.md.

    .venv/bin/python -m bench.dns [--records N] [--rounds R] [--interval S]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from balancer.pool.discovery import Discovery, DnsSource
from bench.server_vs_distccd import RESULTS_DIR
from tests.support.dns import Dnsmasq

GOAL = 0.01
DOMAIN = "b.t"
"""Short: dnsmasq 2.89 writes a broken answer (a name compression pointer past 16 KiB)
for 500 SRV records of a longer domain with their addresses."""


def records(count: int, port: int) -> list[str]:
    out = []
    for index in range(count):
        host = f"s{index}.{DOMAIN}"
        out += [f"--host-record={host},127.1.{index // 250}.{index % 250 + 1}",
                f"--srv-host=_distcc._tcp.{DOMAIN},{host},{port},0,10"]  # fmt: skip
    return out


async def measure(dns: Dnsmasq, count: int, rounds: int) -> list[float]:
    source = DnsSource("srv", DOMAIN)
    discovery = Discovery([source], lambda: None, dns.server)
    deadline = time.monotonic() + 30
    while not await discovery._ask(source):  # (until dnsmasq answers: it binds first)
        if time.monotonic() > deadline:
            raise RuntimeError(f"dnsmasq never answered: {discovery.describe()}")
        await asyncio.sleep(0.1)
    cpu: list[float] = []
    for _ in range(rounds):
        started = time.process_time()
        await discovery._ask(source)
        cpu.append(time.process_time() - started)
        found = discovery.states[source.label]
        if len(found.specs) != count:
            raise RuntimeError(f"found {len(found.specs)} backends, not {count}: {found}")
    return cpu[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--interval", type=float, default=5.0)
    args = parser.parse_args()
    dns = Dnsmasq(DOMAIN, ttl_s=5)
    try:
        dns.start(records(args.records, 3632))
        cpu = asyncio.run(measure(dns, args.records, args.rounds))
    finally:
        dns.stop()
    median = statistics.median(cpu)
    share = median / args.interval
    text = "\n".join([
        "# Backends from DNS (bench/dns.py)",
        "",
        f"{args.records} SRV records (targets' A records in the answer), {args.rounds} asks.",
        "",
        f"- CPU per ask: median {median * 1000:.1f} ms (rounds {min(cpu) * 1000:.1f}-"
        f"{max(cpu) * 1000:.1f} ms)",
        f"- every {args.interval:g} s: {share:.2%} of a core (goal <= {GOAL:.0%}: "
        f"{'met' if share <= GOAL else 'NOT met'})",
    ]) + "\n"  # fmt: skip
    print(text)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "dns.md").write_text(text)


if __name__ == "__main__":
    main()
