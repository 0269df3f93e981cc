"""GSSAPI (Kerberos) mutual authentication, as distcc --auth speaks it, on asyncio streams.

The initiating end, :func:`initiate` (the balancer authenticating to a backend, or a
test client), and what both ends share; the accepting end is daemon/gss.py. The
framing is :mod:`wire.auth`; this module makes the GSSAPI calls. Those are blocking C
calls: accepting with a keytab is fast but may touch the replay cache on disk, and
acquiring initiator credentials from a client keytab talks to the KDC, so each runs in
a thread. The whole handshake is bounded by one timeout, every token by a length
limit, and the number of handshakes in progress at once by ``max_handshakes``.
"""

from __future__ import annotations

import asyncio
import socket
import time

import gssapi
import structlog
from gssapi.raw.misc import GSSError

from client.initiator import Initiator
from wire import RemoteProtocolError
from wire.auth import (
    HANDSHAKE,
    AccessDenied,
    NotAuthenticating,
    check_handshake,
    check_verdict,
    encode_token,
)
from wire.stream import read_auth_token, read_byte

log = structlog.get_logger("distlb.auth")

# What distcc requests and checks on both sides (dcc_gssapi_compare_flags).
REQUIRED_FLAGS = (
    gssapi.RequirementFlag.mutual_authentication,
    gssapi.RequirementFlag.replay_detection,
    gssapi.RequirementFlag.out_of_sequence_detection,
)
DEFAULT_MAX_HANDSHAKES = 64
MAX_ROUNDS = 8  # Kerberos needs one round trip; SPNEGO would need two or three


def _missing_flags(context: gssapi.SecurityContext) -> str:
    granted = context.actual_flags
    return ", ".join(flag.name or str(flag) for flag in REQUIRED_FLAGS if flag not in granted)


class AuthError(Exception):
    """Authentication did not succeed. ``reason`` is a short stable code for logs and
    counters; the message says more."""

    def __init__(self, reason: str, detail: str, principal: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.principal = principal


class AuthSetupError(Exception):
    """Acceptor credentials could not be loaded at startup (a keytab missing, ...)."""


def _gss_detail(exc: GSSError) -> str:
    try:
        return str(exc.gen_message())
    except Exception:  # the message itself can fail to render; the class still says enough
        return type(exc).__name__


_reverse_names: dict[str, tuple[str, float]] = {}
_REVERSE_TTL_S = 60.0
_REVERSE_MAX = 1024


async def reverse_name(address: str, timeout_s: float) -> str:
    """The reverse-DNS name of ``address`` (what distcc's client looks up), cached briefly."""
    now = time.monotonic()
    cached = _reverse_names.get(address)
    if cached is not None and now - cached[1] < _REVERSE_TTL_S:
        return cached[0]
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            host, _ = await loop.getnameinfo((address, 0), socket.NI_NAMEREQD)
    except (OSError, TimeoutError) as exc:
        raise AuthError("no_reverse_name", f"{address}: {exc!r}") from exc
    if len(_reverse_names) >= _REVERSE_MAX:
        _reverse_names.clear()
    _reverse_names[address] = (host, now)
    return host


async def initiate(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    initiator: Initiator,
) -> str:
    """Run the client side of the handshake; returns the server's principal.

    Raises :class:`AuthError` (``reason`` ``access_denied`` when the server refused
    our principal, ``no_handshake`` when it does not authenticate).
    """
    try:
        async with asyncio.timeout(initiator.timeout_s):
            host = initiator.server_name
            if host is None:
                peer = writer.get_extra_info("peername") or ("?", 0)
                host = await reverse_name(peer[0], initiator.timeout_s)
            target = gssapi.Name(f"{initiator.service}@{host}", gssapi.NameType.hostbased_service)
            creds = await asyncio.to_thread(initiator.credentials)
            context = gssapi.SecurityContext(
                name=target,
                creds=creds,
                usage="initiate",
                flags=sum(REQUIRED_FLAGS),
            )
            writer.write(HANDSHAKE)
            await writer.drain()
            check_handshake(await read_byte(reader, "the server's handshake", initiator.timeout_s))
            out = await asyncio.to_thread(context.step)
            for _ in range(MAX_ROUNDS):
                if out:
                    writer.write(encode_token(out, initiator.max_token_bytes))
                    await writer.drain()
                if context.complete:
                    break
                token = await read_auth_token(
                    reader, initiator.max_token_bytes, idle_timeout_s=initiator.timeout_s
                )
                out = await asyncio.to_thread(context.step, token)
            else:
                raise AuthError("bad_handshake", f"not complete after {MAX_ROUNDS} tokens")
            missing = _missing_flags(context)
            if missing:
                raise AuthError("gss_failed", f"the server did not grant {missing}")
            check_verdict(await read_byte(reader, "the server's verdict", initiator.timeout_s))
            return str(context.target_name)
    except AccessDenied as exc:
        raise AuthError("access_denied", str(exc)) from exc
    except NotAuthenticating as exc:
        raise AuthError("no_handshake", f"the server does not authenticate ({exc})") from exc
    except RemoteProtocolError as exc:
        raise AuthError("bad_handshake", str(exc)) from exc
    except GSSError as exc:
        raise AuthError("gss_failed", _gss_detail(exc)) from exc
    except TimeoutError as exc:
        raise AuthError("timeout", f"no handshake within {initiator.timeout_s} s") from exc
    except ConnectionError as exc:
        raise AuthError("server_gone", repr(exc)) from exc
