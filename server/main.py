"""``distlb-server``: the command line."""

from __future__ import annotations

import sys

from daemon.lifecycle import service_main
from server.config import ServerConfig, load
from server.service import Service


def main(argv: list[str] | None = None) -> int:
    return service_main("distlb-server", load, lambda c: _serve(c, argv), argv, check=_check)


async def _serve(config: ServerConfig, argv: list[str] | None) -> None:
    # SIGHUP re-reads the same file and flags
    await Service(config, lambda: load(argv)).run()


async def _check(config: ServerConfig) -> None:
    """``--check-config``: everything a start checks (compilers found, each run in the
    sandbox, the job uids, --tmp-dir reachable, the cache secret, ...), but the listening."""
    Service(config).close()


if __name__ == "__main__":
    sys.exit(main())
