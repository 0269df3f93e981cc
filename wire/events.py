"""The values that cross the wire: one compile request and its reply."""

from __future__ import annotations

from dataclasses import dataclass, field

PROTOCOL_PLAIN = 1
"""Protocol 1: bodies sent as they are."""
PROTOCOL_LZO = 2
"""Protocol 2: every non-empty body LZO1X-1 compressed, both ways."""
PROTOCOL_PUMP = 3
"""Protocol 3 (pump mode): the client's sources and headers instead of preprocessed text,
every body LZO1X-1 compressed, a dependency file in the reply (:class:`PumpRequest`)."""
SERVED_PROTOCOLS = (PROTOCOL_PLAIN, PROTOCOL_LZO)
COMPRESSED_PROTOCOLS = (PROTOCOL_LZO, PROTOCOL_PUMP)


@dataclass(frozen=True, slots=True)
class Request:
    """A compile job: the compiler's argv and the preprocessed source.

    ``argv`` holds the arguments as the client sent them, decoded with
    ``surrogateescape`` so that any byte string survives a round trip.
    ``source`` is always the uncompressed preprocessed source.
    """

    protocol: int
    argv: tuple[str, ...]
    source: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class CompressedRequest:
    """A protocol 2 request whose source is still LZO-compressed: what a
    :class:`wire.RequestReader` made with ``defer_decompression`` returns, so that its
    caller can inflate the source elsewhere (off an event loop, within a budget)."""

    protocol: int
    argv: tuple[str, ...]
    compressed_source: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class PumpEntry:
    """One ``NAME`` of a pump request: a file (``link`` None, ``body`` its content) or a
    symbolic link to ``link``. Names are the client's absolute paths, as sent."""

    name: str
    link: str | None = None
    body: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, slots=True)
class PumpRequest:
    """A protocol 3 request: the client's working directory, its command line as typed
    (not preprocessed) and the files the include server found it needs (wire.pump checks
    them). ``compressed``: the bodies are still LZO (a reader that defers inflating)."""

    protocol: int
    cwd: str
    argv: tuple[str, ...]
    entries: tuple[PumpEntry, ...] = field(repr=False)
    compressed: bool = False


@dataclass(frozen=True, slots=True)
class Reply:
    """A compile result.

    ``status`` is the compiler's raw wait status, as distcc sends it
    (exit code << 8, or the signal number). ``obj`` is the object file,
    empty when the compile failed.
    """

    protocol: int
    status: int
    stderr: bytes = field(repr=False)
    stdout: bytes = field(repr=False)
    obj: bytes = field(repr=False)
    deps: bytes = field(default=b"", repr=False)
    """Protocol 3: the dependency file (``DOTD``), sent with a successful reply."""

    @property
    def ok(self) -> bool:
        return self.status == 0


@dataclass(frozen=True, slots=True)
class CompressedReply:
    """A protocol 2 reply whose bodies are still LZO-compressed (empty ones are empty):
    what a :class:`wire.ReplyReader` made with ``defer_decompression`` returns, so that
    its caller can inflate them elsewhere (off an event loop)."""

    protocol: int
    status: int
    stderr: bytes = field(repr=False)
    stdout: bytes = field(repr=False)
    obj: bytes = field(repr=False)
    deps: bytes = field(default=b"", repr=False)


def exit_status(exit_code: int) -> int:
    """The wait status of a process that exited with ``exit_code``."""
    return (exit_code & 0xFF) << 8


def signal_status(signal_number: int) -> int:
    """The wait status of a process killed by ``signal_number``."""
    return signal_number & 0x7F
