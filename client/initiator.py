"""How we authenticate to a server: plain settings, so that a backend's spec can name
them without loading the GSSAPI library (client/gss.py runs the handshake)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from wire.auth import DEFAULT_MAX_TOKEN_BYTES

if TYPE_CHECKING:
    import gssapi

DEFAULT_HANDSHAKE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Initiator:
    """How we authenticate to a server (the balancer to its backends).

    The target is ``service@host`` (distcc's ``DISTCC_PRINCIPAL=host``), where host is
    ``server_name`` (distcc's ``auth=NAME``) or the reverse-DNS name of the address
    we connected to. Our own credentials come from ``client_keytab`` (and
    ``client_principal``, default: the keytab's first) into ``ccache``, or from the
    environment (``KRB5CCNAME``, ``KRB5_CLIENT_KTNAME``).
    """

    service: str = "host"
    server_name: str | None = None
    client_keytab: str | None = None
    client_principal: str | None = None
    ccache: str | None = None
    timeout_s: float = DEFAULT_HANDSHAKE_TIMEOUT_S
    max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES

    def credentials(self) -> gssapi.Credentials | None:
        """Initiator credentials (blocking: may ask the KDC for a ticket)."""
        import gssapi  # (here, so that naming a backend's auth needs no GSSAPI library)

        store: dict[bytes | str, bytes | str] = {}
        if self.client_keytab:
            store["client_keytab"] = self.client_keytab
            # A per-process memory cache keeps the ticket between handshakes.
            store["ccache"] = self.ccache or "MEMORY:distlb-initiator"
        elif self.ccache:
            store["ccache"] = self.ccache
        if not store and not self.client_principal:
            return None  # the environment's default credentials
        name = (
            gssapi.Name(self.client_principal, gssapi.NameType.kerberos_principal)
            if self.client_principal
            else None
        )
        return gssapi.Credentials(name=name, usage="initiate", store=store or None)
