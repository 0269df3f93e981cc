"""structlog set up once per daemon process: JSON in production, pretty on a terminal.

Under systemd (stderr is the journal's stream: ``JOURNAL_STREAM`` names it), each line
starts with its syslog priority, ``<3>`` to ``<7>`` (sd-daemon(3)), which journald
takes off and keeps as the entry's priority: ``journalctl -p warning`` then shows the
warnings and errors alone.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO

import structlog

LogFormat = Literal["json", "console", "auto"]

SYSLOG_PRIORITIES = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}
"""sd-daemon(3)'s prefixes: ``<N>`` at the start of a line is its priority."""


def journal_stream(stream: TextIO, environ: MutableMapping[str, str] = os.environ) -> bool:
    """Whether ``stream`` is the journal's, as systemd says in ``JOURNAL_STREAM``
    (``DEVICE:INODE`` of the stream it connected to stdout and stderr)."""
    named = environ.get("JOURNAL_STREAM", "")
    device, _, inode = named.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


class PriorityPrefix:
    """A renderer that puts the line's syslog priority in front of what ``renderer``
    made of it."""

    def __init__(self, renderer: structlog.typing.Processor) -> None:
        self.renderer = renderer

    def __call__(self, logger: Any, name: str, event_dict: MutableMapping[str, Any]) -> str:
        priority = SYSLOG_PRIORITIES.get(str(event_dict.get("level", "info")), 6)
        line = self.renderer(logger, name, event_dict)
        return f"<{priority}>{line.decode() if isinstance(line, bytes) else line}"


def configure(log_format: LogFormat = "auto", level: str = "info") -> None:
    """Configure structlog for this process.

    ``auto`` picks the console renderer when stderr is a terminal.
    """
    if log_format == "auto":
        log_format = "console" if sys.stderr.isatty() else "json"
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer()
        if log_format == "console"
        else structlog.processors.JSONRenderer()
    )
    if journal_stream(sys.stderr):
        renderer = PriorityPrefix(renderer)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        # One write per line (print() writes the line and its newline apart, so the
        # lines of processes sharing a stderr, --workers, could run together).
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
