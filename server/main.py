"""``distlb-server``: the command line."""

from __future__ import annotations

import sys

import structlog

from client import logs
from client.cli import run_loop
from server.config import ConfigError, ServerConfig, load
from server.service import Service


def main(argv: list[str] | None = None) -> int:
    try:
        config = load(argv)
    except ConfigError as exc:
        print(f"distlb-server: {exc}", file=sys.stderr)
        return 2
    logs.configure(config.log_format, config.log_level)  # type: ignore[arg-type]
    try:
        run_loop(_serve(config))
    except ConfigError as exc:
        structlog.get_logger("distlb.server").error("config_error", reason=str(exc))
        return 2
    except OSError as exc:
        structlog.get_logger("distlb.server").error("startup_failed", reason=str(exc))
        return 1
    return 0


async def _serve(config: ServerConfig) -> None:
    await Service(config).run()


if __name__ == "__main__":
    sys.exit(main())
