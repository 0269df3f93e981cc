"""``distlb-balancer``: the command line."""

from __future__ import annotations

import sys

import structlog

from balancer.config import BalancerConfig, load
from balancer.service import Service
from balancer.workers import WorkerPlace, supervise
from daemon.lifecycle import run_service, service_main


def main(argv: list[str] | None = None) -> int:
    async def serve(config: BalancerConfig, place: WorkerPlace | None = None) -> None:
        # SIGHUP re-reads the same file and flags.
        await Service(config, lambda: load(argv), place).run()

    def workers(config: BalancerConfig) -> int | None:
        if config.workers == 1:
            return None
        log = structlog.get_logger("distlb-balancer")
        return supervise(
            config.listen, config.port, config.workers,
            lambda place: run_service(log, serve(config, place)),
        )  # fmt: skip

    return service_main("distlb-balancer", load, serve, argv, workers)


if __name__ == "__main__":
    sys.exit(main())
