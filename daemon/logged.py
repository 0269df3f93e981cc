"""What a log line shows of an untrusted command line: bounded."""

from __future__ import annotations

from collections.abc import Sequence

LOGGED_ARGS = 64
LOGGED_ARG_CHARS = 200


def bounded_argv(argv: Sequence[str]) -> list[str]:
    """What a log line shows of a command line: its first arguments, each cut short
    (a refused request may carry 4096 arguments of 64 KiB)."""
    shown = [cut(a) for a in argv]
    if len(shown) > LOGGED_ARGS:
        shown = [*shown[:LOGGED_ARGS], f"… {len(argv) - LOGGED_ARGS} more"]
    return shown


def cut(arg: str) -> str:
    """An untrusted argument cut at :data:`LOGGED_ARG_CHARS` characters."""
    return arg if len(arg) <= LOGGED_ARG_CHARS else arg[:LOGGED_ARG_CHARS] + "…"


def quoted(arg: str) -> str:
    """An untrusted argument as a reason quotes it: the ``repr`` of it :func:`cut` (a
    reason goes to the log, the reply and the dashboard; a request may carry arguments
    of 64 KiB, and ``repr`` writes a control byte four times as long)."""
    return repr(cut(arg))
