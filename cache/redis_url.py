"""What ``--cache-redis`` names: one Redis, a Redis Cluster, or a master found by Sentinel (pure).

- ``redis://[[user]:password@]host:port[/db]`` (also ``rediss://``, ``unix://``): one node,
  handed to redis-py as it is;
- ``redis+cluster://[[user]:password@]host:port[,host:port...]``: any reachable node
  of a cluster tells the client the rest (db 0 only: a cluster has no other);
- ``redis+sentinel://[[user]:password@]host:port[,host:port...]/MASTER[/db]``: the
  sentinels, and the name they know the master by (the password is the data nodes').
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote

RedisKind = Literal["single", "cluster", "sentinel"]
_SINGLE_SCHEMES = ("redis://", "rediss://", "unix://")
_HOST = re.compile(r"[A-Za-z0-9._-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]")
_MASTER_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")


class BadRedisURL(ValueError):
    """A cache URL that cannot be understood; the message says what was wrong."""


@dataclass(frozen=True, slots=True)
class RedisTarget:
    kind: RedisKind
    url: str
    nodes: tuple[tuple[str, int], ...] = ()
    """The nodes named (a single node's, the cluster's startup nodes, the sentinels)."""
    master_name: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        """What logs and metrics call it (without a password)."""
        hosts = ",".join(node_name(host, port) for host, port in self.nodes)
        if self.kind == "cluster":
            return f"cluster {hosts}"
        if self.kind == "sentinel":
            return f"sentinel {hosts} master {self.master_name}"
        return hosts or "redis"


def node_name(host: str, port: int) -> str:
    """``host:port`` (``[v6]:port``), as the per-node metrics name a node."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _host_port(text: str, url: str) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    if not sep or not _HOST.fullmatch(host):
        raise BadRedisURL(f"{url!r}: {text!r} is not HOST:PORT")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise BadRedisURL(f"{url!r}: bad port in {text!r}")
    return host.strip("[]"), int(port_text)


def _db(text: str, url: str) -> int:
    if not text.isdigit() or int(text) > 1_000_000:
        raise BadRedisURL(f"{url!r}: the database must be a number, not {text!r}")
    return int(text)


def parse_redis_url(url: str) -> RedisTarget:
    """The target ``url`` names; raises :class:`BadRedisURL` with the reason."""
    url = url.strip()
    if url.startswith(_SINGLE_SCHEMES):
        return _single(url)
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("redis+cluster", "redis+sentinel"):
        raise BadRedisURL(
            f"{url!r}: expected redis://HOST:PORT[/DB], redis+cluster://HOST:PORT[,HOST:PORT...] "
            "or redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER"
        )
    rest, question, _ = rest.partition("?")
    netloc, _, path = rest.partition("/")
    if question:
        raise BadRedisURL(f"{url!r}: options (?...) are not understood here")
    userinfo, at, hosts = netloc.rpartition("@")
    username, password = _credentials(userinfo) if at else (None, None)
    nodes = tuple(_host_port(part.strip(), url) for part in hosts.split(",") if part.strip())
    if not nodes:
        raise BadRedisURL(f"{url!r}: no HOST:PORT")
    parts = [p for p in path.split("/") if p]
    if scheme == "redis+cluster":
        if parts and parts != ["0"]:
            raise BadRedisURL(f"{url!r}: a cluster has only database 0")
        return RedisTarget("cluster", url, nodes, username=username, password=password)
    if not parts or not _MASTER_NAME.fullmatch(parts[0]):
        raise BadRedisURL(f"{url!r}: name the master: redis+sentinel://HOST:PORT/MASTER")
    if len(parts) > 2:
        raise BadRedisURL(f"{url!r}: expected /MASTER[/DB] after the sentinels")
    db = _db(parts[1], url) if len(parts) == 2 else 0
    return RedisTarget("sentinel", url, nodes, parts[0], db, username, password)


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    """(user, password) of ``USER:PASSWORD``, ``:PASSWORD`` or ``USER`` (a user alone,
    as redis-py reads ``redis://USER@HOST``: its password may come from a file)."""
    user, _, password = userinfo.partition(":")
    return unquote(user) or None, unquote(password) or None


def _single(url: str) -> RedisTarget:
    if url.startswith("unix://"):
        path = url.removeprefix("unix://").partition("?")[0]
        if not path.startswith("/"):
            raise BadRedisURL(f"{url!r}: expected unix:///PATH")
        return RedisTarget("single", url)
    rest = url.partition("://")[2]
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username, password = _credentials(userinfo) if at else (None, None)
    if "," in hosts:
        raise BadRedisURL(f"{url!r}: several nodes: use redis+cluster:// or redis+sentinel://")
    host_port = hosts if ":" in hosts.lstrip("[").rpartition("]")[2] else f"{hosts}:6379"
    node = _host_port(host_port, url)
    db_text = path.partition("?")[0].strip("/")
    db = _db(db_text, url) if db_text else 0
    return RedisTarget("single", url, (node,), db=db, username=username, password=password)
