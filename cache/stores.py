"""Where entries live: memory (LRU, bounded bytes), disk (bounded, atomic), Redis (shared).

Stores move bytes only; checksums are checked by :class:`cache.ResultCache`. A
store that cannot answer raises :class:`StoreUnavailable`, and the cache goes on
without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Protocol

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff


class StoreUnavailable(Exception):
    """The store could not answer in time (down, slow, or refusing)."""


class Store(Protocol):
    name: str

    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes) -> None: ...

    async def delete(self, key: str) -> None: ...


class MemoryStore:
    """An LRU bounded in bytes (one entry larger than the bound is not kept)."""

    name = "memory"

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size_bytes = 0
        self._entries: OrderedDict[str, bytes] = OrderedDict()

    async def get(self, key: str) -> bytes | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    async def put(self, key: str, value: bytes) -> None:
        if len(value) > self.max_bytes:
            return
        await self.delete(key)
        self._entries[key] = value
        self.size_bytes += len(value)
        while self.size_bytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.size_bytes -= len(evicted)

    async def delete(self, key: str) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self.size_bytes -= len(old)


class DiskStore:
    """Files under ``root/ab/abcdef…``, written atomically (temp file, then rename),
    bounded in total bytes (least recently used files go first)."""

    name = "disk"

    def __init__(self, root: str, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        os.makedirs(root, exist_ok=True)
        self.size_bytes = sum(size for _, _, size in self._files())

    def _path(self, key: str) -> str:
        if len(key) < 3 or not key.isalnum():
            raise ValueError(f"bad cache key {key!r}")
        return os.path.join(self.root, key[:2], key)

    def _files(self) -> list[tuple[float, str, int]]:
        found = []
        for directory, _, names in os.walk(self.root):
            for name in names:
                path = os.path.join(directory, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                found.append((st.st_mtime, path, st.st_size))
        return found

    def _get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            with open(path, "rb") as fh:
                data = fh.read()
            os.utime(path)  # recently used
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreUnavailable(f"disk: {exc}") from exc
        return data

    def _put(self, key: str, value: bytes) -> None:
        path = self._path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(value)
            os.replace(tmp, path)
        except OSError as exc:
            with_suppressed_unlink(tmp)
            raise StoreUnavailable(f"disk: {exc}") from exc
        self.size_bytes += len(value)
        if self.size_bytes > self.max_bytes:
            self._evict()

    def _evict(self) -> None:
        files = sorted(self._files())
        total = sum(size for _, _, size in files)
        for _, path, size in files:
            if total <= self.max_bytes * 0.9:
                break
            with_suppressed_unlink(path)
            total -= size
        self.size_bytes = total

    async def get(self, key: str) -> bytes | None:
        return await asyncio.to_thread(self._get, key)

    async def put(self, key: str, value: bytes) -> None:
        await asyncio.to_thread(self._put, key, value)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(with_suppressed_unlink, self._path(key))


def with_suppressed_unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


TRIP_AFTER = 3


class RedisStore:
    """A Redis shared by every balancer: entries expire after ``ttl_s``. A lookup (on
    the job's path) is bounded by ``timeout_s``; a store (in the background) by
    ``put_timeout_s``. After a failure the store is skipped for ``retry_s``, so a
    dead Redis costs one timeout, not one per job."""

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        ttl_s: int = 7 * 86400,
        timeout_s: float = 0.25,
        put_timeout_s: float = 2.0,
        retry_s: float = 1.0,
        max_value_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self.url = url
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self.put_timeout_s = max(put_timeout_s, timeout_s)
        self.retry_s = retry_s
        self.max_value_bytes = max_value_bytes
        self.down_until = 0.0
        self.failures_in_a_row = 0
        self._redis = aioredis.Redis.from_url(
            url,
            socket_timeout=self.put_timeout_s,
            socket_connect_timeout=timeout_s,
            retry_on_timeout=False,
            # A pooled connection that died with a restarted Redis fails its next
            # command: reconnect and try that command once more at once. Without this,
            # each dead connection in the pool cost a failure and ``retry_s`` of
            # bypass, one after another, long after Redis was back.
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[redis.exceptions.ConnectionError],
            health_check_interval=0,
        )

    @property
    def available(self) -> bool:
        return time.monotonic() >= self.down_until

    async def _call(
        self, what: str, call: Callable[[], Awaitable[object]], timeout_s: float | None = None
    ) -> object:
        if not self.available:
            raise StoreUnavailable(f"redis: skipped after a failure ({what})")
        try:
            async with asyncio.timeout(timeout_s or self.timeout_s):
                result = await call()
        except (TimeoutError, OSError, redis.exceptions.RedisError) as exc:
            # A refused or broken connection means down: skip Redis for a while. A slow
            # answer costs only this call, until it happens TRIP_AFTER times in a row.
            self.failures_in_a_row += 1
            slow = isinstance(exc, TimeoutError | redis.exceptions.TimeoutError)
            if not slow or self.failures_in_a_row >= TRIP_AFTER:
                self.down_until = time.monotonic() + self.retry_s
            raise StoreUnavailable(f"redis {what}: {str(exc) or type(exc).__name__}") from exc
        self.failures_in_a_row = 0
        return result

    async def get(self, key: str) -> bytes | None:
        value = await self._call("get", lambda: self._redis.get(key))
        return value if isinstance(value, bytes) else None

    async def put(self, key: str, value: bytes) -> None:
        if len(value) > self.max_value_bytes:
            return
        # One round trip: the value and its expiry together.
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(key, value, ex=self.ttl_s)
        await self._call("put", pipe.execute, self.put_timeout_s)

    async def delete(self, key: str) -> None:
        await self._call("delete", lambda: self._redis.delete(key), self.put_timeout_s)

    async def close(self) -> None:
        await self._redis.aclose()
