"""A throwaway Kerberos realm (k5test with Debian's KDC) and the principals the auth tests use.

The realm's KDC runs on loopback; ``host/localhost`` is the service principal (the
real client asks for ``host@<reverse name of 127.0.0.1>`` = ``host@localhost``), its
key in ``realm.keytab``. Each user gets its own credential cache file.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from tests.support.servers import Distccd, wait_until

SBIN = ("/usr/sbin", "/sbin")
TOOLS = ("kdb5_util", "krb5kdc", "kadmin.local", "kinit", "klist", "kdestroy")
REALM = "KRBTEST.COM"


def _tool_path() -> str:
    path = os.environ.get("PATH", "")
    return os.pathsep.join([path, *(d for d in SBIN if d not in path.split(os.pathsep))])


def require_krb5_tools() -> None:
    """Fail (not skip) with a clear message when the KDC or client tools are missing."""
    os.environ["PATH"] = _tool_path()
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(
            f"missing Kerberos tools {missing}: run scripts/bootstrap.sh "
            "(it installs krb5-kdc krb5-admin-server krb5-user libkrb5-dev)",
            pytrace=False,
        )


def _free_port_base(count: int = 10) -> int:
    """A base port with ``count`` free ports above it (k5test uses portbase..portbase+9)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + count >= 65536:
            continue
        try:
            for port in range(base, base + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise AssertionError("no run of free ports for the KDC")


class Kdc:
    """One realm per test module: start it, make principals and tickets, stop it."""

    def __init__(self) -> None:
        require_krb5_tools()
        import k5test  # imported here so that a missing package fails with its own message

        self.dir = Path(tempfile.mkdtemp(prefix="distlb-kdc-"))
        self.dir.chmod(0o755)
        # A 1 s clock skew allowance (default 300 s) lets a short ticket really expire.
        self.realm = k5test.K5Realm(
            realm=REALM,
            portbase=_free_port_base(),
            krb5_conf={"libdefaults": {"clockskew": "1"}},
        )
        self.keytab = self.realm.keytab  # host/localhost's key
        self.host_principal = self.realm.host_princ
        self._saved = {k: os.environ.get(k) for k in ("KRB5_CONFIG", "KRB5RCACHEDIR")}
        # Every process the tests start (servers, balancers, clients) uses this realm.
        os.environ["KRB5_CONFIG"] = self.realm.env["KRB5_CONFIG"]
        os.environ["KRB5RCACHEDIR"] = str(self.dir)

    def principal(self, name: str) -> str:
        return f"{name}@{REALM}"

    def add_user(self, name: str) -> str:
        principal = self.principal(name)
        self.realm.addprinc(principal, self._password(name))
        return principal

    def _password(self, name: str) -> str:
        return f"pw-{name}"

    def ticket(self, name: str, lifetime: str | None = None) -> str:
        """kinit ``name`` into its own cache file; returns the cache's path."""
        cache = str(self.dir / f"ccache-{name.replace('/', '_')}-{os.urandom(3).hex()}")
        flags = ["-c", cache, *(["-l", lifetime] if lifetime else [])]
        self.realm.kinit(self.principal(name), self._password(name), flags=flags)
        os.chmod(cache, 0o644)
        return cache

    def expired_ticket(self, name: str, within_s: float = 15.0) -> str:
        """A cache whose ticket has expired: kinit with a 1 s lifetime, then wait
        (bounded) until GSSAPI itself refuses to start a context with it."""
        cache = self.ticket(name, lifetime="1s")
        wait_until(lambda: not can_initiate(cache), within_s,
                   f"{name}'s 1 s ticket to expire", interval_s=0.2)  # fmt: skip
        return cache

    def service_keytab(self, name: str) -> tuple[str, str]:
        """A new principal ``name`` with its key in a keytab file (a balancer's client
        keytab); returns (principal, keytab path)."""
        principal = self.principal(name)
        self.realm.addprinc(principal)  # random key
        keytab = str(self.dir / f"{name.replace('/', '_')}.keytab")
        self.realm.extract_keytab(principal, keytab)
        return principal, keytab

    def stop(self) -> None:
        self.realm.stop()
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(self.dir, ignore_errors=True)


def can_initiate(ccache: str, target: str = "host@localhost") -> bool:
    """Whether a client with this credential cache can start a context to ``target``."""
    import gssapi
    from gssapi.raw.misc import GSSError

    try:
        creds = gssapi.Credentials(usage="initiate", store={"ccache": ccache})
        name = gssapi.Name(target, gssapi.NameType.hostbased_service)
        gssapi.SecurityContext(name=name, creds=creds, usage="initiate").step()
    except GSSError:
        return False
    return True


class AuthDistccd(Distccd):
    """Debian's real ``distccd --auth`` on loopback, as DESIGN.md describes it: it drops
    to its own user before reading the keytab, the realm's config and the replay
    cache, so those are made readable (and the cache writable) for it."""

    def __init__(self, kdc: Kdc, whitelist: list[str], *, jobs: int = 2) -> None:
        os.chmod(kdc.realm.tmpdir, 0o755)
        os.chmod(kdc.realm.env["KRB5_CONFIG"], 0o644)
        work = Path(tempfile.mkdtemp(prefix="distccd-auth-", dir=kdc.dir))
        work.chmod(0o755)
        rcache = work / "rcache"
        rcache.mkdir()
        rcache.chmod(0o1777)
        keytab = work / "keytab"
        shutil.copy(kdc.keytab, keytab)
        keytab.chmod(0o644)
        listed = work / "whitelist"
        # distccd compares names with the realm cut off.
        listed.write_text("".join(f"{name.split('@')[0]}\n" for name in whitelist))
        listed.chmod(0o644)
        env = {
            **os.environ,
            "KRB5_KTNAME": str(keytab),
            "DISTCCD_PRINCIPAL": "host@localhost",
            "KRB5RCACHEDIR": str(rcache),
        }
        super().__init__(jobs=jobs, extra_args=("--auth", "--whitelist", str(listed)), env=env)
