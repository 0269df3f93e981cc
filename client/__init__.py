"""Client side of distcc: an asyncio client library and the tools around it."""

from client.distcc import (
    AuthFailed,
    ClientError,
    ConnectFailed,
    Stalled,
    TimedOut,
    TurnedAway,
    address_text,
    compile_remote,
)

__all__ = [
    "AuthFailed",
    "ClientError",
    "ConnectFailed",
    "Stalled",
    "TimedOut",
    "TurnedAway",
    "address_text",
    "compile_remote",
]
