"""What every console script shares: config from defaults < TOML < flags, and the event loop.

Lives in ``client`` because every role imports ``client`` and none may import another role.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tomllib
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import fields
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import structlog

T = TypeVar("T")


class ConfigError(Exception):
    """The configuration cannot work; the message says which setting and why."""


def load_config(config_type: type[T], parser: argparse.ArgumentParser, argv: list[str] | None) -> T:
    """Build ``config_type`` (a dataclass) from its defaults, then ``--config FILE``
    (TOML, keys spelled like the flags: ``job-lifetime`` or ``job_lifetime``), then flags.

    ``parser`` must use ``argument_default=argparse.SUPPRESS`` so that only flags
    actually given override the file. Raises :class:`ConfigError`.
    """
    flags = vars(parser.parse_args(argv))
    values: dict[str, Any] = {}
    config_file = flags.pop("config", None)
    if config_file:
        values.update(read_toml(config_file, {f.name for f in fields(config_type)}))  # type: ignore[arg-type]
    values.update(flags)
    hints = get_type_hints(config_type)
    for name, value in values.items():
        if not _fits(value, hints.get(name, object)):
            raise ConfigError(f"{name.replace('_', '-')}: {value!r} is not a {hints[name]}")
    try:
        return config_type(**values)
    except TypeError as exc:
        raise ConfigError(str(exc)) from exc


def _fits(value: object, hint: object) -> bool:
    """Whether a TOML value suits a config field typed ``int``, ``float``, ``str``,
    ``bool``, ``list[str]`` or any of those ``| None``."""
    origin = get_origin(hint)
    if origin in (Union, UnionType):
        return any(_fits(value, arg) for arg in get_args(hint))
    if hint is type(None):
        return value is None
    if origin is list:
        (item,) = get_args(hint) or (object,)
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def read_toml(path: str, known: set[str]) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"--config {path}: {exc}") from exc
    values = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError(f"{path}: unknown key {key!r}")
        values[name] = value
    return values


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop when it is installed (the one place a loop is chosen)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


class ConnectionTasks:
    """The tasks serving open connections, so that shutdown can wait for them, then end them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def serve(
        self, handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        """``handler`` wrapped for ``asyncio.start_server``, each call tracked."""

        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            try:
                await handler(reader, writer)
            finally:
                self._tasks.discard(task)

        return tracked

    async def drain(self, grace_s: float, on_cancel: Callable[[int], None] | None = None) -> int:
        """Let the connections finish for ``grace_s``, then cancel the rest (which kills
        their work), telling ``on_cancel`` how many first; returns that number."""
        if not self._tasks:
            return 0
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
        if pending and on_cancel is not None:
            on_cancel(len(pending))
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=10)
        return len(pending)


def service_main(
    prog: str,
    load: Callable[[list[str] | None], Any],
    serve: Callable[[Any], Coroutine[Any, Any, None]],
    argv: list[str] | None,
    supervise: Callable[[Any], int | None] | None = None,
) -> int:
    """A daemon's command line: config (exit 2 on errors), logging, the loop;
    exit 1 when it cannot start (e.g. a port is taken). ``supervise(config)``, when
    given, may run the daemon itself (as several processes) and return its exit
    status; None: run ``serve`` here."""
    from client import logs

    try:
        config = load(argv)
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    logs.configure(config.log_format, config.log_level)
    log = structlog.get_logger(prog)
    if supervise is not None:
        status = supervise(config)
        if status is not None:
            return status
    return run_service(log, serve(config))


def run_service(log: Any, main: Coroutine[Any, Any, None]) -> int:
    """Run a daemon's main coroutine: 0 when it ends, 2 on a config error, 1 when it
    cannot start (e.g. a port is taken)."""
    try:
        run_loop(main)
    except ConfigError as exc:
        log.error("config_error", reason=str(exc))
        return 2
    except OSError as exc:
        log.error("startup_failed", reason=str(exc))
        return 1
    return 0


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
