"""What the client tools share: the event loop, a one-shot tool's exit status, and
the version every console script answers ``--version`` with."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine
from importlib.metadata import PackageNotFoundError, version
from typing import Any


def distlb_version() -> str:
    """The installed distribution's version: pyproject.toml's, the one place it is
    written ("unknown" when run from a checkout that was never installed)."""
    try:
        return version("distlb")
    except PackageNotFoundError:
        return "unknown"


def add_version_flag(parser: argparse.ArgumentParser) -> None:
    """``--version``: print ``PROG VERSION`` and exit 0."""
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {distlb_version()}",
        help="print the version and exit",
    )  # fmt: skip


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop when it is installed (the one place a loop is chosen)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def tool_main(prog: str, run: Callable[[], Coroutine[Any, Any, int]],
              expected: tuple[type[Exception], ...]) -> int:  # fmt: skip
    """A one-shot tool: run ``run()`` on the loop and return its exit status; the
    ``expected`` errors print one line and exit 2."""
    code = [2]

    async def go() -> None:
        code[0] = await run()

    try:
        run_loop(go())
    except expected as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    return code[0]
