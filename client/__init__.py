"""Client side of distcc: an asyncio client library and the tools around it."""

from client.distcc import (
    ClientError,
    ConnectFailed,
    TimedOut,
    TurnedAway,
    compile_remote,
)

__all__ = ["ClientError", "ConnectFailed", "TimedOut", "TurnedAway", "compile_remote"]
