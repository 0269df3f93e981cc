"""The cache as a job sees it: layered stores, authenticated entries, and the counts a
dashboard shows.

Both daemons look a job up with :meth:`ResultCache.lookup` and store its result with
:meth:`ResultCache.store`: the key is the job's, as the compiler's family allows its
paths to be left out (cache/keys.py); a hit found under a key that left them out has
its warnings rewritten to name the requester's files (cache/stderr_paths.py), or is
not taken. Beside each entry goes a small *marker* under the job's path-free digest,
so that a miss whose job differs from a stored one only by paths is counted
(``path_misses``): what sharing across checkouts would gain, or what the rules refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Awaitable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from cache.entry import (
    CachedResult,
    CorruptEntry,
    RejectedEntry,
    check_secret,
    decode_entry,
    encode_entry,
)
from cache.keys import CompilerIdentity, JobDigest, anywhere_key, cache_key
from cache.stderr_paths import Unmappable, rewrite
from cache.stores import Store, StoreUnavailable

ON_LOOP_BYTES = 256 * 1024
"""Entries up to this size are made and checked on the event loop (a MAC and a checksum
over a few hundred KiB take well under a millisecond); bigger ones in a thread."""
REWRITE_ON_LOOP_BYTES = 8 * 1024
"""A hit's warnings up to this size are renamed for its requester on the event loop
(some 60 ns a byte: half a millisecond); larger ones in a thread."""
log = structlog.get_logger("distlb.cache")
_LATENCY_WINDOW = 1000
MAX_UNANSWERED = 1024
MAX_PENDING = 64
"""Stores (and markers) waiting in the background at most; more are bypassed."""
MARKER_PREFIX = "m"
"""Marker keys: ``m`` and a sha256 in hex (entry keys are the hex alone)."""
_MARKER_CONTEXT = b"distlb-cache-marker-v1\0"


def _left_paths_out(job: JobDigest, identity: CompilerIdentity) -> bool:
    return job.portable is not None and job.digest_for(identity) == job.portable


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
    path_misses: int = 0
    """Misses whose job differs from a stored entry's only by the paths it names."""
    unmappable: int = 0
    """Entries found whose warnings could not be made to name the requester's files:
    not served (counted as misses too)."""
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
        self._checks: set[asyncio.Task[bool]] = set()
        self._unanswered: set[bytes] = set()
        """Jobs whose last lookup no store answered (their miss says nothing of paths)."""

    async def get(self, key: str) -> CachedResult | None:
        started = time.monotonic()
        found, _ = await self._find(key)
        if found is None:
            self.stats.misses += 1
            return None
        result, size = found
        self.stats.record_hit(time.monotonic() - started, size)
        return result

    async def _find(self, key: str) -> tuple[tuple[CachedResult, int] | None, bool]:
        """The entry under ``key`` and its size, and whether any store answered (a hit in
        a later store is copied into the earlier ones; bypasses, corrupt and rejected
        entries are counted here)."""
        answered = False
        for index, store in enumerate(self.stores):
            try:
                data = await store.get(key)
            except StoreUnavailable as exc:
                self.stats.bypasses += 1
                log.debug("cache_bypass", store=store.name, reason=str(exc))
                continue
            answered = True
            if data is None:
                continue
            try:
                result = (
                    decode_entry(key, data, self._secret)
                    if len(data) <= ON_LOOP_BYTES
                    else await asyncio.to_thread(decode_entry, key, data, self._secret)
                )  # (its MAC and checksum run over the whole entry: a big one off the loop)
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
            for earlier in self.stores[:index]:
                await self._quietly(earlier.put(key, data))
            return (result, len(data)), True
        return None, answered

    async def lookup(self, job: JobDigest, identity: CompilerIdentity) -> CachedResult | None:
        """The result of ``job`` as ``identity``'s compiler made it, its warnings naming
        ``job``'s files; None on a miss (an entry whose warnings cannot be so named is
        not served: counted as unmappable, and as a miss)."""
        started = time.monotonic()
        key = cache_key(job, identity)
        found, answered = await self._find(key)
        if found is None:
            self.stats.misses += 1
            if not answered:  # (no marker is looked up for it: the stores are not answering)
                if len(self._unanswered) >= MAX_UNANSWERED:
                    self._unanswered.clear()
                self._unanswered.add(job.exact)
            return None
        result, size = found
        if _left_paths_out(job, identity) and result.stderr:
            try:
                if not result.paths:
                    raise Unmappable("the entry keeps no paths")
                # (16 MiB of warnings take most of a second: a big one in a thread)
                stderr = (
                    rewrite(result.stderr, result.paths, job.paths)
                    if len(result.stderr) <= REWRITE_ON_LOOP_BYTES
                    else await asyncio.to_thread(rewrite, result.stderr, result.paths, job.paths)
                )
                result = replace(result, stderr=stderr)
            except Unmappable as exc:
                self.stats.unmappable += 1
                self.stats.misses += 1
                log.info("cache_hit_unmappable", key=key, reason=str(exc))
                return None
        self.stats.record_hit(time.monotonic() - started, size)
        return replace(result, paths=())

    def store(self, job: JobDigest, identity: CompilerIdentity, result: CachedResult) -> None:
        """Store ``result`` of ``job`` compiled by ``identity``'s compiler in the
        background, with its marker; the job's paths go with it when its key left them
        out and its warnings may need them."""
        keeps = _left_paths_out(job, identity) and bool(result.stderr)
        entry = replace(result, paths=job.paths if keeps else ())
        self._later(self._store(cache_key(job, identity), entry, job, identity))

    async def _store(
        self, key: str, result: CachedResult, job: JobDigest, identity: CompilerIdentity
    ) -> None:
        """The marker first, then the entry (``stored`` counts the entry: once it has,
        its marker is there too)."""
        marker_key = anywhere_key(job, identity)
        if marker_key is not None:
            await self._put_marker(MARKER_PREFIX + marker_key, job.exact)
        await self.put(key, result)

    def note_miss(self, job: JobDigest, identities: Sequence[CompilerIdentity]) -> None:
        """After ``job`` missed under each of ``identities``: count it as a path miss, in
        the background (a job never waits for it; at most :data:`MAX_PENDING` at once,
        beyond which misses go uncounted: ``path_misses`` is a lower bound). Not when
        no store answered its lookup: a failing Redis node gets no more work."""
        if job.exact in self._unanswered:
            self._unanswered.discard(job.exact)
            return
        if job.anywhere is None or not identities or len(self._checks) >= MAX_PENDING:
            return
        task = asyncio.create_task(self.count_path_miss(job, identities))
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def count_path_miss(self, job: JobDigest, identities: Iterable[CompilerIdentity]) -> bool:
        """After ``job`` missed under each of ``identities``: whether an entry of a job
        that differed from it only by paths is stored (then counted as a path miss)."""
        for identity in identities:
            marker_key = anywhere_key(job, identity)
            if marker_key is None:
                return False
            stored_exact = await self._get_marker(MARKER_PREFIX + marker_key)
            if stored_exact is not None and stored_exact != job.exact:
                self.stats.path_misses += 1
                return True
        return False

    def _marker_mac(self, key: str, exact: bytes) -> bytes:
        return hmac.new(self._secret, _MARKER_CONTEXT + key.encode() + exact,
                        hashlib.sha256).digest()  # fmt: skip

    async def _put_marker(self, key: str, exact: bytes) -> None:
        value = exact + self._marker_mac(key, exact)
        for store in self.stores:
            await self._quietly(store.put(key, value))

    async def _get_marker(self, key: str) -> bytes | None:
        """The exact digest of the job whose marker ``key`` is (None: none, or a marker
        not made with this cache's secret)."""
        for store in self.stores:
            try:
                value = await store.get(key)
            except StoreUnavailable:
                self.stats.bypasses += 1
                continue
            if value is not None and len(value) == 64:
                exact, mac = value[:32], value[32:]
                if hmac.compare_digest(mac, self._marker_mac(key, exact)):
                    return exact
        return None

    async def put(self, key: str, result: CachedResult) -> None:
        size = len(result.obj) + len(result.stderr) + len(result.stdout)
        data = (
            encode_entry(key, result, self._secret)
            if size <= ON_LOOP_BYTES
            else await asyncio.to_thread(encode_entry, key, result, self._secret)
        )
        for store in self.stores:
            if await self._quietly(store.put(key, data)):
                self.stats.bytes_written += len(data)
        self.stats.stores += 1

    def put_later(self, key: str, result: CachedResult) -> None:
        """Store without making the job wait (bounded: at most 64 stores pending)."""
        self._later(self.put(key, result))

    def _later(self, operation: Coroutine[Any, Any, None]) -> None:
        if len(self._background) >= MAX_PENDING:
            operation.close()
            self.stats.bypasses += 1
            return
        task = asyncio.create_task(operation)
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
        for task in [*self._background, *self._checks]:
            task.cancel()
        for store in self.stores:
            closer = getattr(store, "close", None)
            if closer is not None:
                await closer()
