"""``distlb-balancer``: the command line."""

from __future__ import annotations

import sys

import structlog

from balancer.config import BalancerConfig, ConfigError, load
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

        def worker(place: WorkerPlace) -> int:
            # A worker started again reads the config afresh: the others may have
            # reloaded it since the balancer started (SIGHUP reaches each worker).
            try:
                fresh = load(argv)
            except ConfigError as exc:
                log.error("config_error", reason=str(exc), using="the config at start")
                fresh = config
            return run_service(log, serve(fresh, place))

        return supervise(config.listen, config.port, config.workers, worker)

    async def check(config: BalancerConfig) -> None:
        # (--check-config: everything a start checks but the listening: the backends,
        # the judge's options, keytabs and principal lists read, the cache secret and
        # Redis's password, the budgets)
        service = Service(config, lambda: load(argv))
        if service.cache is not None:
            await service.cache.close()

    return service_main("distlb-balancer", load, serve, argv, workers, check=check)


if __name__ == "__main__":
    sys.exit(main())
