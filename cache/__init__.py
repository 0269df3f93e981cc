"""The result cache: keys (what determines a reply), entries (authenticated), stores.

Pluggable wherever a job passes: the balancer (shared Redis + memory), the server
(local disk), or a client.
"""

from cache.digest import digest_off_loop
from cache.entry import (
    MIN_SECRET_BYTES,
    BadEntry,
    CachedResult,
    CorruptEntry,
    RejectedEntry,
    decode_entry,
    encode_entry,
)
from cache.keys import (
    CompilerIdentity,
    JobDigest,
    anywhere_key,
    cache_key,
    job_digest,
    key_argv,
    why_not_cacheable,
)
from cache.path_rules import compiler_family
from cache.redis_store import RedisStore
from cache.redis_url import BadRedisURL, RedisTarget, parse_redis_url
from cache.result_cache import CacheStats, ResultCache
from cache.stores import DiskStore, MemoryStore, Store, StoreUnavailable

__all__ = [
    "MIN_SECRET_BYTES",
    "BadEntry",
    "BadRedisURL",
    "CacheStats",
    "CachedResult",
    "CompilerIdentity",
    "CorruptEntry",
    "DiskStore",
    "JobDigest",
    "MemoryStore",
    "RedisStore",
    "RedisTarget",
    "RejectedEntry",
    "ResultCache",
    "Store",
    "StoreUnavailable",
    "anywhere_key",
    "cache_key",
    "compiler_family",
    "decode_entry",
    "digest_off_loop",
    "encode_entry",
    "job_digest",
    "key_argv",
    "parse_redis_url",
    "why_not_cacheable",
]
