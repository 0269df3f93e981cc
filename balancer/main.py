"""``distlb-balancer``: the command line."""

from __future__ import annotations

import os
import sys

import structlog

from balancer.cli import load
from balancer.config import BalancerConfig, ConfigError
from balancer.service import NEEDS_RESTART, Service
from balancer.workers.supervisor import WorkerPlace, supervise
from client.cli import run_loop
from daemon.lifecycle import run_service, service_main
from daemon.reload import check_reloadable, flag, read_snapshot, write_snapshot


def main(argv: list[str] | None = None) -> int:
    async def serve(config: BalancerConfig, place: WorkerPlace | None = None) -> None:
        if place is None:  # SIGHUP re-reads the same file and flags
            await Service(config, lambda: load(argv)).run()
            return
        await Service(config, lambda: _from_snapshot(place), place).run()

    def workers(config: BalancerConfig) -> int | None:
        if config.workers == 1:
            return None
        log = structlog.get_logger("distlb-balancer")
        in_force = config
        generation = 0

        def reload(snapshot: str) -> None:
            # The supervisor reads and checks the config once for all workers: each then
            # applies the same one (or all refuse it) from the snapshot.
            nonlocal in_force, generation
            generation += 1
            try:
                fresh = load(argv)
                changed = check_reloadable(in_force, fresh, NEEDS_RESTART)
                # The start's own checks, as --check-config runs them (keytabs,
                # principal lists, the cache secret): a config the workers would refuse
                # is never written down for a worker that starts again later (a review).
                run_loop(check(fresh))
            except ConfigError as exc:
                write_snapshot(snapshot, in_force, generation, str(exc))
                log.error("reload_failed", reason=str(exc))
                return
            in_force = fresh
            write_snapshot(snapshot, fresh, generation, None)
            log.info("reload_read", changed=[flag(name) for name in changed])

        def worker(place: WorkerPlace) -> int:
            # A worker started again takes the config in force: the others may have
            # reloaded since the balancer started.
            fresh = config
            if os.path.exists(place.snapshot):
                try:
                    fresh = read_snapshot(place.snapshot, BalancerConfig)[0]
                except ConfigError as exc:
                    log.error("config_error", reason=str(exc), using="the config at start")
            return run_service(log, serve(fresh, place))

        return supervise(config.listen, config.port, config.workers, worker, reload)

    async def check(config: BalancerConfig) -> None:
        # (--check-config: everything a start checks but the listening: the backends,
        # the judge's options, keytabs and principal lists read, the cache secret and
        # Redis's password, the budgets)
        service = Service(config, lambda: load(argv))
        if service.cache is not None:
            await service.cache.close()

    return service_main("distlb-balancer", load, serve, argv, workers, check=check)


def _from_snapshot(place: WorkerPlace) -> BalancerConfig:
    """What a worker reloads: the config the supervisor read and checked for all, or
    the reason it refused it (raised as :class:`ConfigError`)."""
    config, error = read_snapshot(place.snapshot, BalancerConfig)
    if error is not None:
        raise ConfigError(error)
    config.validate()
    return config


if __name__ == "__main__":
    sys.exit(main())
