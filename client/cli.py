"""What the client tools share: the event loop, and a one-shot tool's exit status."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any


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
