"""The shared store: one Redis, a Redis Cluster, or the master a set of sentinels names.

Every operation is bounded (a lookup by ``timeout_s``, a store or delete by
``put_timeout_s``) and counted on the node that served or failed it
(:mod:`cache.node_stats`). A node that refuses or breaks a connection, or answers
slowly three times in a row, is skipped for ``retry_s`` (each skip is a bypass); in a
cluster that costs only the keys whose slots it holds. After a failover the client
learns the new layout by itself: a cluster client re-reads the slot map after a
failed command (and in the background after a timeout), a sentinel-managed
connection asks the sentinels for the master every time it connects.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
import structlog
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff

from cache.node_stats import NodeBook
from cache.redis_url import node_name, parse_redis_url
from cache.stores import StoreUnavailable

log = structlog.get_logger("distlb.cache.redis")
REFRESH_EVERY_S = 0.25
"""A cluster's slot map is re-read at most this often while a node fails."""
REFRESH_WHILE_DOWN_S = 1.0
"""And this often in the background while the map names a master that failed."""
_FAILURES = (
    TimeoutError,
    OSError,
    redis.exceptions.RedisError,
    redis.exceptions.RedisClusterException,  # (a slot no node serves, for one)
)


def _slow(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError | redis.exceptions.TimeoutError)


class RedisStore:
    """A Redis shared by every balancer: entries expire after ``ttl_s``. A lookup (on
    the job's path) is bounded by ``timeout_s``; a store (in the background) by
    ``put_timeout_s``. ``url`` is parsed by :func:`cache.redis_url.parse_redis_url`
    (raises :class:`cache.redis_url.BadRedisURL`); ``password``, when given, is used
    where the URL names none (read from a file, so that it is in no command line)."""

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        password: str | None = None,
        ttl_s: int = 7 * 86400,
        timeout_s: float = 0.25,
        put_timeout_s: float = 2.0,
        retry_s: float = 1.0,
        max_value_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.url = url
        self.target = parse_redis_url(url)
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self.put_timeout_s = max(put_timeout_s, timeout_s)
        self.retry_s = retry_s
        self.max_value_bytes = max_value_bytes
        self.nodes = NodeBook()
        self._refreshing: asyncio.Task[None] | None = None
        self._layout_lock = asyncio.Lock()
        self._refreshed_at = float("-inf")
        common: dict[str, Any] = {
            "socket_timeout": self.put_timeout_s,
            "socket_connect_timeout": timeout_s,
            # A pooled connection that died with a restarted (or failed-over) Redis fails
            # its next command: reconnect and try that command once more at once. In a
            # cluster the one retry comes after re-reading the slot map.
            "retry": Retry(NoBackoff(), 1),
            "health_check_interval": 0,
        }
        target = self.target
        password = target.password or password
        self._cluster: RedisCluster | None = None
        self._sentinel: Sentinel | None = None
        if target.kind == "cluster":
            self._cluster = RedisCluster(
                startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
                # One dead master must not make the client refuse the live ones' slots.
                require_full_coverage=False,
                username=target.username,
                password=password,
                **common,
            )
            self._redis: Any = self._cluster
        elif target.kind == "sentinel":
            timeouts = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
            self._sentinel = Sentinel(list(target.nodes), sentinel_kwargs=timeouts)
            self._redis = self._sentinel.master_for(
                target.master_name,
                db=target.db,
                username=target.username,
                password=password,
                retry_on_error=[redis.exceptions.ConnectionError],
                **common,
            )
        else:
            if password is not None:
                common["password"] = password  # (one in the URL wins: redis-py's rule)
            self._redis = aioredis.Redis.from_url(
                url, retry_on_timeout=False, retry_on_error=[redis.exceptions.ConnectionError],
                **common,
            )  # fmt: skip

    def node_for(self, key: str | None) -> str:
        """The node that serves ``key`` as far as the client knows now (a cluster's
        startup nodes until it has read the slot map; a sentinel master's name until
        it has been found)."""
        if self._cluster is not None:
            if key is not None:
                with contextlib.suppress(*_FAILURES, KeyError):
                    node = self._cluster.get_node_from_key(key)
                    if node is not None:
                        return node_name(node.host, int(node.port))
            return self.target.label
        if self.target.kind == "sentinel":
            address = getattr(self._redis.connection_pool, "master_address", None)
            if address:
                return node_name(str(address[0]), int(address[1]))
            return self.target.label
        return self.target.label

    async def _call(
        self,
        what: str,
        key: str | None,
        call: Callable[[], Awaitable[object]],
        timeout_s: float,
        lookup: bool = False,
    ) -> object:
        now = time.monotonic()
        before = self.node_for(key)
        if not self.nodes.available(before, now):
            self.nodes.node(before).skipped()
            self._refresh_later()
            raise StoreUnavailable(f"redis {before}: skipped after a failure ({what})")
        try:
            async with asyncio.timeout(timeout_s):
                await self._layout_known()
                started = time.perf_counter()
                result = await call()
                elapsed = time.perf_counter() - started
        except _FAILURES as exc:
            # A refused or broken connection means down: skip that node for a while. A
            # slow answer costs only this call, until it happens TRIP_AFTER times in a row.
            self.nodes.node(before).failed(time.monotonic(), _slow(exc), self.retry_s)
            self._refresh_later()
            reason = str(exc) or type(exc).__name__
            raise StoreUnavailable(f"redis {before} {what}: {reason}") from exc
        except Exception as exc:
            # redis-py 8.1's cluster client failed commands with a RuntimeError or an
            # AttributeError when its slot map was read while they connected (seen here
            # with concurrent first commands, before _layout_known). A cache must never
            # fail a job: the node counts as failed (which bounds this line to one a
            # second per node) and is bypassed.
            self.nodes.node(before).failed(time.monotonic(), False, self.retry_s)
            self._refresh_later()
            log.warning("cache_client_error", node=before, op=what, error=type(exc).__name__,
                        reason=str(exc)[:200])  # fmt: skip
            raise StoreUnavailable(f"redis {before} {what}: {type(exc).__name__}") from exc
        # (after a failover the command may have been served by the node that took over)
        found = (result is not None) if lookup else None
        self.nodes.node(self.node_for(key)).answered(elapsed, found)
        return result

    async def _layout_known(self) -> None:
        """A cluster client reads the slot map before its first command and after a
        failed one: let one operation do it while the others wait (concurrent first
        commands raced with that reading in redis-py 8.1 and failed)."""
        if self._cluster is not None:
            async with self._layout_lock:  # (no wait at all once the map is read)
                await self._cluster.initialize()

    def _refresh_later(self) -> None:
        """In a cluster, re-read the slot map in the background (once at a time), and
        again every :data:`REFRESH_WHILE_DOWN_S` while the map names a master whose last
        operation failed: a timed-out command does not make the client do so, and a
        failover must be seen even while the old master's keys are being skipped, and
        before a job has to skip one (the first jobs after a failover missed while the
        map was stale: the cluster takes seconds to promote a replica)."""
        if self._cluster is None or (self._refreshing and not self._refreshing.done()):
            return
        now = time.monotonic()
        if now - self._refreshed_at < REFRESH_EVERY_S:
            return
        self._refreshed_at = now
        self._refreshing = asyncio.create_task(self._refresh(self._cluster))

    async def _refresh(self, cluster: RedisCluster) -> None:
        while True:
            try:
                async with asyncio.timeout(self.put_timeout_s):
                    await cluster.nodes_manager.initialize()
            except _FAILURES:
                pass  # (tried again below while a node is down; operations say why)
            self._refreshed_at = time.monotonic()
            if not self.nodes.failing() & set(self.masters() or ()):
                return  # (replaced in the map, or answering again)
            await asyncio.sleep(REFRESH_WHILE_DOWN_S)

    def masters(self) -> list[str] | None:
        """A cluster's masters as this client knows them now (None: not a cluster)."""
        if self._cluster is None:
            return None
        with contextlib.suppress(*_FAILURES, AttributeError):
            return sorted(node_name(n.host, int(n.port)) for n in self._cluster.get_primaries())
        return []

    async def get(self, key: str) -> bytes | None:
        """The value under ``key``, or None; a value past ``max_value_bytes`` (which no
        daemon stores: someone else wrote it) is a miss, and is read no further than
        that bound plus a byte (GETRANGE: a planted 300 MB value held a balancer's
        memory while it was read whole)."""
        last = self.max_value_bytes  # (GETRANGE's end is inclusive: one byte past the bound)
        value = await self._call(
            "get", key, lambda: self._redis.getrange(key, 0, last), self.timeout_s, True
        )
        if not isinstance(value, bytes) or not value or len(value) > self.max_value_bytes:
            return None  # (GETRANGE of a missing key is empty: as GET's nothing)
        return value

    async def put(self, key: str, value: bytes) -> None:
        if len(value) > self.max_value_bytes:
            return
        # One command, one key (one slot in a cluster): the value and its expiry together.
        await self._call(
            "put", key, lambda: self._redis.set(key, value, ex=self.ttl_s), self.put_timeout_s
        )

    async def delete(self, key: str) -> None:
        await self._call("delete", key, lambda: self._redis.delete(key), self.put_timeout_s)

    def node_snapshot(self) -> list[dict[str, object]]:
        """Per node: hits, misses, bypasses, lookup p50/p99 (for /status)."""
        return self.nodes.snapshot()

    async def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
            await asyncio.gather(self._refreshing, return_exceptions=True)
        await self._redis.aclose()
        if self._sentinel is not None:
            for sentinel in self._sentinel.sentinels:
                await sentinel.aclose()
