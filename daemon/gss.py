"""The accepting end of GSSAPI (Kerberos) authentication (distcc --auth): a server or
balancer checking a client, then judging its principal against the allow/deny lists;
its flags and settings. The framing is :mod:`wire.auth`, what both ends share
:mod:`client.gss`."""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter, deque
from dataclasses import dataclass, field

import gssapi
import structlog
from gssapi.raw.misc import GSSError

from client.gss import (
    DEFAULT_MAX_HANDSHAKES,
    MAX_ROUNDS,
    AuthError,
    AuthSetupError,
    _gss_detail,
    _missing_flags,
)
from client.initiator import DEFAULT_HANDSHAKE_TIMEOUT_S
from daemon.bounds import RefusalLog, connection_holder
from daemon.config import ConfigError
from daemon.principals import ListUnreadable, PrincipalFile, PrincipalPolicy
from wire import ConnectionClosed, RemoteProtocolError
from wire.auth import (
    DEFAULT_MAX_TOKEN_BYTES,
    HANDSHAKE,
    NotAuthenticating,
    check_handshake,
    encode_token,
    verdict,
)
from wire.stream import TOKEN_WHAT, read_auth_token, read_byte

log = structlog.get_logger("distlb.auth")
DEFAULT_MAX_HANDSHAKES_PER_ADDRESS = 8
"""An eighth of the places: idle connections from one address cannot take them all,
and a developer's ``make -j64`` still logs in at once (its connections past eight wait
a few milliseconds each for one of its own handshakes to end)."""


@dataclass
class Acceptor:
    """Checks clients: the handshake, then the principal against ``policy``."""

    principal: str | None = None
    """Accept only for this service principal (``host/name@REALM`` or ``host@name``);
    None: any key in the keytab (what a VIP with several names needs)."""
    keytab: str | None = None
    """Keytab file; None: ``KRB5_KTNAME`` or the system default."""
    policy: PrincipalPolicy = field(default_factory=PrincipalPolicy)
    timeout_s: float = DEFAULT_HANDSHAKE_TIMEOUT_S
    max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES
    max_handshakes: int = DEFAULT_MAX_HANDSHAKES
    max_per_address: int = DEFAULT_MAX_HANDSHAKES_PER_ADDRESS
    """Handshakes in progress from one client address: one host holding idle
    connections cannot take every place. More from that address wait (within the
    handshake's time) for one of its own to end: distcc opens a connection, and a
    handshake, per job, so one developer's ``make -j64`` starts with up to 64."""
    in_progress: int = 0
    _creds: gssapi.Credentials | None = None
    _by_address: Counter[str] = field(default_factory=Counter)
    _by_net: Counter[str] = field(default_factory=Counter)
    """Places held per host as the connection caps count hosts (an IPv6 /64 is one)."""
    _waiting: dict[str, deque[asyncio.Future[None]]] = field(default_factory=dict)
    _refusals: RefusalLog = field(default_factory=lambda: RefusalLog(log, "auth_refused"))

    def load(self) -> None:
        """Acquire the acceptor credentials now; raises :class:`AuthSetupError`."""
        store: dict[bytes | str, bytes | str] | None = (
            {"keytab": self.keytab} if self.keytab else None
        )
        name = None
        if self.principal:
            # distccd's rule: with an '@' it is a host-based service (host@name).
            name_type = (
                gssapi.NameType.hostbased_service
                if "@" in self.principal and "/" not in self.principal
                else gssapi.NameType.kerberos_principal
            )
            name = gssapi.Name(self.principal, name_type)
        try:
            self._creds = gssapi.Credentials(name=name, usage="accept", store=store)
            # Fails here, not on the first client, when the keytab has no usable key.
            self._creds.inquire()
        except GSSError as exc:
            where = self.keytab or "KRB5_KTNAME or the default keytab"
            raise AuthSetupError(f"acceptor credentials from {where}: {_gss_detail(exc)}") from exc

    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
        """Run the server side of the handshake and judge the principal.

        Returns the client's principal after sending the verdict ``y``. Raises
        :class:`AuthError` (after sending ``n`` when the principal is refused).
        """
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        await self._take_place(address, deadline)
        try:
            principal = await self._handshake(reader, writer, deadline)
        finally:
            self._give_back(address)
        refusal = self.policy.refusal(principal)
        try:
            writer.write(verdict(refusal is None))
            async with asyncio.timeout(self.timeout_s):
                await writer.drain()
        except (ConnectionError, TimeoutError) as exc:
            raise AuthError("client_gone", f"sending the verdict: {exc!r}") from exc
        if refusal is not None:
            raise AuthError("principal_refused", refusal, principal)
        return principal

    async def _take_place(self, address: str, deadline: float) -> None:
        """A handshake place for a connection from ``address``: at once, or (its own
        share taken) once one of its own ends, by ``deadline``. Raises AuthError when
        every place is taken, or none came in time. An IPv6 /64 (one host may hold a
        whole one and spread over it: a review) holds at most half of all places, and
        each of its addresses its own share, so the other hosts of a LAN, one /64 too,
        still log in (another review)."""
        if self.in_progress >= self.max_handshakes:
            raise AuthError("too_many_handshakes", f"{self.in_progress} in progress")
        held = self._by_address[address]
        if held < self.max_per_address:
            net = connection_holder(address)
            if net != address and self._by_net[net] >= max(
                self.max_per_address, self.max_handshakes // 2
            ):
                raise AuthError("too_many_handshakes",
                                f"{self._by_net[net]} in progress from {net}")  # fmt: skip
            self.in_progress += 1
            self._by_address[address] = held + 1
            self._by_net[net] += 1
            return
        # One of the handshakes from this address hands its place over when it ends.
        place: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._waiting.setdefault(address, deque())
        queue.append(place)
        try:
            async with asyncio.timeout_at(deadline):
                await place
        except BaseException as exc:
            if place.done() and not place.cancelled():
                self._give_back(address)  # handed over just as we gave up
            else:
                place.cancel()  # (_give_back skips it)
            if isinstance(exc, TimeoutError):
                raise AuthError(
                    "timeout",
                    f"{held} handshakes in progress from {address} did not end within "
                    f"{self.timeout_s} s (--max-handshakes-per-address)",
                ) from exc
            raise

    def _give_back(self, address: str) -> None:
        """End a handshake from ``address``: its place goes to the next connection from
        the same address that waits for one, else back to all."""
        queue = self._waiting.get(address)
        while queue:
            place = queue.popleft()
            if not place.done():
                place.set_result(None)
                if not queue:
                    del self._waiting[address]
                return
        self._waiting.pop(address, None)
        self.in_progress -= 1
        self._by_address[address] -= 1
        if not self._by_address[address]:
            del self._by_address[address]
        net = connection_holder(address)
        self._by_net[net] -= 1
        if not self._by_net[net]:
            del self._by_net[net]

    async def admit(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """One connection's handshake and verdict, as a server and a balancer take it:
        True with the principal bound to the connection's log lines; False when refused,
        logged as ``auth_refused`` with the reason (the caller counts it)."""
        try:
            principal = await self.accept(reader, writer)
        except AuthError as exc:
            peer = writer.get_extra_info("peername")
            self._refusals.refused(exc.reason, str(peer[0]) if peer else "?",
                                   detail=exc.detail, principal=exc.principal)  # fmt: skip
            return False
        structlog.contextvars.bind_contextvars(principal=principal)
        return True

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, deadline: float
    ) -> str:
        assert self._creds is not None, "Acceptor.load() first"
        try:
            async with asyncio.timeout_at(deadline):
                check_handshake(await read_byte(reader, "the handshake byte", self.timeout_s))
                writer.write(HANDSHAKE)
                await writer.drain()
                context = gssapi.SecurityContext(creds=self._creds, usage="accept")
                for _ in range(MAX_ROUNDS):
                    token = await read_auth_token(
                        reader, self.max_token_bytes, idle_timeout_s=self.timeout_s
                    )
                    out = await asyncio.to_thread(context.step, token)
                    if out:
                        writer.write(encode_token(out, self.max_token_bytes))
                        await writer.drain()
                    if context.complete:
                        break
                else:
                    raise AuthError("bad_handshake", f"not complete after {MAX_ROUNDS} tokens")
        except NotAuthenticating as exc:
            raise AuthError(
                "no_handshake", f"the client did not ask to authenticate ({exc})"
            ) from exc
        except ConnectionClosed as exc:
            if exc.expected == TOKEN_WHAT and exc.received_bytes == 0:
                raise AuthError(
                    "no_token", "the client closed without sending a token (no valid ticket?)"
                ) from exc
            raise AuthError("client_gone", str(exc)) from exc
        except RemoteProtocolError as exc:
            raise AuthError("bad_handshake", str(exc)) from exc
        except GSSError as exc:
            raise AuthError("gss_failed", _gss_detail(exc)) from exc
        except TimeoutError as exc:
            raise AuthError("timeout", f"no complete handshake within {self.timeout_s} s") from exc
        except ConnectionError as exc:
            raise AuthError("client_gone", repr(exc)) from exc
        missing = _missing_flags(context)
        if missing:
            raise AuthError("gss_failed", f"the client did not grant {missing}")
        if gssapi.RequirementFlag.anonymity in context.actual_flags:
            raise AuthError("anonymous", "an anonymous client may not compile")
        try:
            return str(context.initiator_name)
        except UnicodeDecodeError as exc:
            raise AuthError("gss_failed", "the client's principal is not UTF-8") from exc


def add_acceptor_flags(parser: argparse.ArgumentParser, role: str) -> None:
    """The flags that turn on authentication of clients (shared by server and balancer)."""
    parser.add_argument(
        "--auth",
        action="store_const",
        const=True,
        help="require GSSAPI (Kerberos) authentication from clients, as distccd --auth "
        "(clients use the host option ,auth); refuse clients that do not",
    )
    parser.add_argument(
        "--principal",
        metavar="NAME",
        help="our service principal, e.g. host/build.example.com@EXAMPLE.COM or "
        "host@build.example.com (default: any key in the keytab)",
    )
    parser.add_argument(
        "--keytab", metavar="FILE", help="keytab with our key (default: KRB5_KTNAME)"
    )
    parser.add_argument(
        "--allow-principals",
        metavar="FILE",
        help=f"only these principals may {role} (one per line, # comments; re-read on change)",
    )
    parser.add_argument(
        "--deny-principals",
        metavar="FILE",
        help="these principals may not (one per line; wins over --allow-principals)",
    )
    parser.add_argument(
        "--auth-timeout",
        type=float,
        metavar="S",
        help="longest handshake (default {default})",
    )
    parser.add_argument(
        "--max-handshakes",
        type=int,
        metavar="N",
        help="handshakes in progress at once; more are closed (default {default})",
    )
    parser.add_argument(
        "--max-handshakes-per-address",
        type=int,
        metavar="N",
        help="handshakes in progress at once from one client address; more from it wait "
        "for one of its own to end (default {default})",
    )


@dataclass
class AcceptorConfig:
    """The ``--auth`` settings a server and a balancer share (their configs extend it)."""

    auth: bool = False
    principal: str | None = None
    keytab: str | None = None
    allow_principals: str | None = None
    deny_principals: str | None = None
    auth_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT_S
    max_handshakes: int = DEFAULT_MAX_HANDSHAKES
    max_handshakes_per_address: int = DEFAULT_MAX_HANDSHAKES_PER_ADDRESS

    def acceptor(self) -> Acceptor | None:
        """The GSSAPI acceptor (keytab and lists loaded) with --auth, else None.

        Raises :class:`ConfigError` when the keytab or a list cannot be read, or when
        auth settings are given without ``auth``.
        """
        if not self.auth:
            if self.allow_principals or self.deny_principals or self.principal or self.keytab:
                raise ConfigError(
                    "--principal, --keytab, --allow-principals and --deny-principals need --auth"
                )
            return None
        per_address = self.max_handshakes_per_address
        if self.auth_timeout <= 0 or self.max_handshakes < 1 or per_address < 1:
            raise ConfigError(
                "--auth-timeout must be positive, --max-handshakes and "
                "--max-handshakes-per-address at least 1"
            )
        policy = PrincipalPolicy(
            allow=PrincipalFile(self.allow_principals) if self.allow_principals else None,
            deny=PrincipalFile(self.deny_principals) if self.deny_principals else None,
        )
        acceptor = Acceptor(
            principal=self.principal,
            keytab=self.keytab,
            policy=policy,
            timeout_s=self.auth_timeout,
            max_handshakes=self.max_handshakes,
            max_per_address=per_address,
        )
        for listed in (policy.allow, policy.deny):
            if listed is not None:
                try:
                    listed.load()
                except ListUnreadable as exc:
                    raise ConfigError(f"principal list {exc}") from exc
        try:
            acceptor.load()
        except AuthSetupError as exc:
            raise ConfigError(str(exc)) from exc
        return acceptor
