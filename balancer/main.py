"""``distlb-balancer``: the command line."""

from __future__ import annotations

import sys

import structlog

from balancer.config import BalancerConfig, ConfigError, load
from balancer.service import Service
from client import logs
from client.cli import run_loop


def main(argv: list[str] | None = None) -> int:
    try:
        config = load(argv)
    except ConfigError as exc:
        print(f"distlb-balancer: {exc}", file=sys.stderr)
        return 2
    logs.configure(config.log_format, config.log_level)  # type: ignore[arg-type]
    try:
        run_loop(_serve(config, lambda: load(argv)))
    except ConfigError as exc:
        structlog.get_logger("distlb.balancer").error("config_error", reason=str(exc))
        return 2
    except OSError as exc:
        structlog.get_logger("distlb.balancer").error("startup_failed", reason=str(exc))
        return 1
    return 0


async def _serve(config: BalancerConfig, reload_config: object) -> None:
    await Service(config, reload_config).run()  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
