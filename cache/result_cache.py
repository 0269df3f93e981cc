"""The cache as a job sees it: layered stores, authenticated entries, and the counts a
dashboard shows."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field

import structlog

from cache.entry import (
    CachedResult,
    CorruptEntry,
    RejectedEntry,
    check_secret,
    decode_entry,
    encode_entry,
)
from cache.stores import Store, StoreUnavailable

log = structlog.get_logger("distlb.cache")
_LATENCY_WINDOW = 1000


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    bypasses: int = 0
    """Lookups or stores skipped because a store was down or slow."""
    corrupt: int = 0
    """Entries damaged in a store (their checksum failed): misses."""
    rejected: int = 0
    """Entries not made with this cache's secret for their key (forged, moved, another
    secret's, or the old format): misses."""
    stores: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    hit_seconds: list[float] = field(default_factory=list)

    def record_hit(self, seconds: float, size: int) -> None:
        self.hits += 1
        self.bytes_read += size
        self.hit_seconds.append(seconds)
        if len(self.hit_seconds) > _LATENCY_WINDOW:
            del self.hit_seconds[: len(self.hit_seconds) - _LATENCY_WINDOW]


class ResultCache:
    """Looks in each store in order (fastest first); a hit in a later store is copied
    into the earlier ones. Entries are authenticated with ``secret`` (at least
    :data:`cache.entry.MIN_SECRET_BYTES`; ``ValueError`` otherwise): a corrupt or a
    rejected entry is deleted, logged and counted, and is a miss."""

    def __init__(self, stores: Sequence[Store], secret: bytes) -> None:
        check_secret(secret)
        self._secret = secret
        self.stores = list(stores)
        self.stats = CacheStats()
        self._background: set[asyncio.Task[None]] = set()

    async def get(self, key: str) -> CachedResult | None:
        started = time.monotonic()
        for index, store in enumerate(self.stores):
            try:
                data = await store.get(key)
            except StoreUnavailable as exc:
                self.stats.bypasses += 1
                log.debug("cache_bypass", store=store.name, reason=str(exc))
                continue
            if data is None:
                continue
            try:
                result = decode_entry(key, data, self._secret)
            except CorruptEntry as exc:
                self.stats.corrupt += 1
                log.warning("cache_corrupt_entry", store=store.name, key=key, reason=str(exc))
                await self._quietly(store.delete(key))
                continue
            except RejectedEntry as exc:
                self.stats.rejected += 1
                log.warning("cache_rejected_entry", store=store.name, key=key, reason=str(exc))
                await self._quietly(store.delete(key))
                continue
            self.stats.record_hit(time.monotonic() - started, len(data))
            for earlier in self.stores[:index]:
                await self._quietly(earlier.put(key, data))
            return result
        self.stats.misses += 1
        return None

    async def put(self, key: str, result: CachedResult) -> None:
        data = encode_entry(key, result, self._secret)
        for store in self.stores:
            if await self._quietly(store.put(key, data)):
                self.stats.bytes_written += len(data)
        self.stats.stores += 1

    def put_later(self, key: str, result: CachedResult) -> None:
        """Store without making the job wait (bounded: at most 64 stores pending)."""
        if len(self._background) >= 64:
            self.stats.bypasses += 1
            return
        task = asyncio.create_task(self.put(key, result))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _quietly(self, operation: Awaitable[None]) -> bool:
        try:
            await operation
        except StoreUnavailable as exc:
            self.stats.bypasses += 1
            log.debug("cache_bypass", reason=str(exc))
            return False
        return True

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        for store in self.stores:
            closer = getattr(store, "close", None)
            if closer is not None:
                await closer()
