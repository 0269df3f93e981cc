"""Where entries live: memory (LRU, bounded bytes), disk (bounded, atomic); Redis
(shared) is in :mod:`cache.redis_store`.

Stores move bytes only; checksums are checked by :class:`cache.ResultCache`. A
store that cannot answer raises :class:`StoreUnavailable`, and the cache goes on
without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections import OrderedDict
from typing import Protocol


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
