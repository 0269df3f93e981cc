"""The distcc wire protocol, sans-IO.

Values (:mod:`wire.events`), bytes in (:mod:`wire.reader`), bytes out
(:mod:`wire.writer`), hard limits (:mod:`wire.limits`) and typed errors
(:mod:`wire.errors`). :mod:`wire.stream` is the thin asyncio adapter.
"""

from wire.errors import (
    CompressionError,
    ConnectionClosed,
    LimitExceeded,
    LocalProtocolError,
    RemoteProtocolError,
    UnsupportedProtocol,
    WireError,
)
from wire.events import Reply, Request
from wire.limits import Limits
from wire.reader import NEED_DATA, ReplyReader, RequestReader
from wire.writer import encode_reply, encode_request

__all__ = [
    "NEED_DATA",
    "CompressionError",
    "ConnectionClosed",
    "LimitExceeded",
    "Limits",
    "LocalProtocolError",
    "RemoteProtocolError",
    "Reply",
    "ReplyReader",
    "Request",
    "RequestReader",
    "UnsupportedProtocol",
    "WireError",
    "encode_reply",
    "encode_request",
]
