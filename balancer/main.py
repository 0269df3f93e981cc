"""``distlb-balancer``: the command line."""

from __future__ import annotations

import sys

from balancer.config import BalancerConfig, load
from balancer.service import Service
from client.cli import service_main


def main(argv: list[str] | None = None) -> int:
    async def serve(config: BalancerConfig) -> None:
        # SIGHUP re-reads the same file and flags.
        await Service(config, lambda: load(argv)).run()

    return service_main("distlb-balancer", load, serve, argv)


if __name__ == "__main__":
    sys.exit(main())
