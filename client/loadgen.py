"""distlb-loadgen: send compile jobs to a distcc server or balancer, bounded in count and time.

``concurrency`` workers send trivial or sized C compiles through
:func:`client.distcc.compile_remote` until ``jobs`` have been sent or ``duration_s`` has
passed, whichever comes first, then print a summary: how many were ok, turned away
(the server closed without a reply: the real client would compile those locally),
compile errors and failures, with p50/p99 latency of the ok ones.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass, field

from client.cli import add_version_flag
from client.distcc import ClientError, TurnedAway, compile_remote
from client.quantiles import quantile
from wire import Request

OUTCOMES = ("ok", "turned_away", "compile_error", "failed")
MAX_JOBS = 1_000_000
MAX_DURATION_S = 24 * 3600.0


def sized_source(size_bytes: int, seed: int = 0) -> bytes:
    """A valid C translation unit of at least ``size_bytes`` (a trivial one for 0)."""
    parts = [f"int distlb_load_{seed}(int x) {{ return x * {seed % 97 + 3}; }}\n"]
    total = len(parts[0])
    index = 0
    while total < size_bytes:
        part = (
            f"static int f{index}(int x) {{ int y = x ^ {index};"
            f" for (int i = 0; i < {index % 7 + 1}; i++) y = y * 31 + i; return y; }}\n"
            f"int g{index}(int x) {{ return f{index}(x) + {index}; }}\n"
        )
        parts.append(part)
        total += len(part)
        index += 1
    return "".join(parts).encode()


def load_request(size_bytes: int, seed: int, *, compiler: str, protocol: int) -> Request:
    argv = (compiler, "-O2", "-c", f"load{seed}.c", "-o", f"load{seed}.o")
    return Request(protocol, argv, sized_source(size_bytes, seed))


@dataclass
class Summary:
    """What a load run saw; latencies are of ok jobs, in milliseconds."""

    sent: int = 0
    ok: int = 0
    turned_away: int = 0
    compile_error: int = 0
    failed: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    errors: dict[str, int] = field(default_factory=dict)

    def record(self, outcome: str, ms: float | None = None, error: str = "") -> None:
        self.sent += 1
        setattr(self, outcome, getattr(self, outcome) + 1)
        if ms is not None:
            self.latencies_ms.append(ms)
        if error:
            self.errors[error] = self.errors.get(error, 0) + 1

    def quantile_ms(self, q: float) -> float | None:
        return quantile(self.latencies_ms, q)

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        del data["latencies_ms"]
        data["seconds"] = round(self.seconds, 3)
        data["p50_ms"] = _round(self.quantile_ms(0.5))
        data["p99_ms"] = _round(self.quantile_ms(0.99))
        data["jobs_per_s"] = round(self.sent / self.seconds, 2) if self.seconds else None
        return data

    def table(self) -> str:
        d = self.as_dict()
        head = ("sent", "ok", "turned_away", "compile_error", "failed", "p50_ms", "p99_ms",
                "jobs_per_s", "seconds")  # fmt: skip
        row = [str(d[k]) if d[k] is not None else "-" for k in head]
        widths = [max(len(h), len(v)) for h, v in zip(head, row, strict=True)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)),
                 "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True))]  # fmt: skip
        lines += [f"error x{n}: {text}" for text, n in sorted(self.errors.items())]
        return "\n".join(lines)


def _round(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None


async def run_load(
    host: str,
    port: int,
    *,
    jobs: int,
    concurrency: int,
    duration_s: float,
    size_bytes: int = 0,
    compiler: str = "gcc",
    protocol: int = 1,
    timeout_s: float = 60.0,
) -> Summary:
    """Send up to ``jobs`` compiles, ``concurrency`` at a time, for at most ``duration_s``."""
    if not 0 < jobs <= MAX_JOBS or not 0 < duration_s <= MAX_DURATION_S or concurrency < 1:
        raise ValueError("jobs, duration and concurrency must be positive and bounded")
    summary = Summary()
    started = time.monotonic()
    deadline = started + duration_s
    next_job = 0

    async def worker() -> None:
        nonlocal next_job
        while next_job < jobs and time.monotonic() < deadline:
            seed = next_job
            next_job += 1
            request = load_request(size_bytes, seed, compiler=compiler, protocol=protocol)
            began = time.monotonic()
            try:
                reply = await compile_remote(host, port, request, timeout_s=timeout_s)
            except TurnedAway:
                summary.record("turned_away")
                continue
            except ClientError as exc:
                summary.record("failed", error=type(exc).__name__)
                continue
            ms = (time.monotonic() - began) * 1000
            if reply.status == 0 and reply.obj:
                summary.record("ok", ms)
            else:
                summary.record("compile_error", error=reply.stderr.decode(errors="replace")[:200])

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    summary.seconds = time.monotonic() - started
    return summary


def _target(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host:
        return text, 3632
    if not port.isdigit():
        raise argparse.ArgumentTypeError(f"want HOST[:PORT], got {text!r}")
    return host, int(port)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="distlb-loadgen", description=__doc__.splitlines()[0])
    p.add_argument("target", type=_target, help="HOST[:PORT] of a server or balancer (3632)")
    p.add_argument("--jobs", "-n", type=int, default=100, help="most jobs to send (100)")
    p.add_argument("--concurrency", "-c", type=int, default=8, help="jobs at once (8)")
    p.add_argument("--duration", type=float, default=60.0, metavar="S",
                   help="stop sending after this long (60)")  # fmt: skip
    p.add_argument("--size-kb", type=float, default=0.0,
                   help="source size per job; 0 = a one-line function (0)")  # fmt: skip
    p.add_argument("--compiler", default="gcc")
    p.add_argument("--lzo", action="store_true", help="protocol 2 (the ,lzo host option)")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S", help="per job (60)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_version_flag(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Exit 0 when no job failed (turn-aways are not failures), 1 otherwise, 2 on usage."""
    args = build_parser().parse_args(argv)
    host, port = args.target
    try:
        summary = asyncio.run(
            run_load(
                host,
                port,
                jobs=args.jobs,
                concurrency=args.concurrency,
                duration_s=args.duration,
                size_bytes=int(args.size_kb * 1024),
                compiler=args.compiler,
                protocol=2 if args.lzo else 1,
                timeout_s=args.timeout,
            )
        )
    except ValueError as exc:
        print(f"distlb-loadgen: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary.as_dict()) if args.json else summary.table())
    return 0 if summary.failed == 0 and summary.compile_error == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
