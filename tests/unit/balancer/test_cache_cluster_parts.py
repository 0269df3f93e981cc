"""Issue 18's pure parts: what --cache-redis names, the per-node counts and breaker, and
whose results may become shared entries."""

from __future__ import annotations

import re

import pytest

from balancer.cli import load as load_balancer_config
from balancer.config import ConfigError
from balancer.dispatch.attempts import Dispatched
from balancer.dispatch.caching import CacheFront, source_identity
from balancer.pool.pool import Pool
from balancer.routing.backend import Backend, BackendReport, BackendSpec
from balancer.settings import PoolSettings
from balancer.workers.merge import merge_status
from cache import (
    BadRedisURL,
    CachedResult,
    CompilerIdentity,
    JobDigest,
    MemoryStore,
    ResultCache,
    job_digest,
    parse_redis_url,
)
from cache.node_stats import LATENCY_BUCKETS_S, TRIP_AFTER, NodeBook
from tests.support.secrets import farm_secret
from wire import Reply, Request

GCC = CompilerIdentity("gcc (Debian 12.2.0-14) 12.2.0", "ab" * 32)


def test_one_redis_keeps_its_url() -> None:
    target = parse_redis_url("redis://:secret@10.0.0.5:6380/2")
    assert (target.kind, target.nodes, target.db) == ("single", (("10.0.0.5", 6380),), 2)
    assert target.label == "10.0.0.5:6380"
    assert parse_redis_url("redis://cachehost").nodes == (("cachehost", 6379),)
    assert parse_redis_url("unix:///run/redis.sock").kind == "single"


def test_a_cluster_url_lists_its_startup_nodes() -> None:
    target = parse_redis_url("redis+cluster://u:p%40ss@10.0.0.1:7000,10.0.0.2:7001,[::1]:7002")
    assert target.kind == "cluster"
    assert target.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7001), ("::1", 7002))
    assert (target.username, target.password) == ("u", "p@ss")
    assert "p@ss" not in target.label and "p@ss" not in repr(target)


@pytest.mark.parametrize(
    "url", ["redis://distlb@h:6379/0", "redis+cluster://distlb@h:7000",
            "redis+sentinel://distlb@h:26379/cache"],
)  # fmt: skip
def test_a_user_alone_in_a_url_is_a_user_as_redis_py_reads_it(url: str) -> None:
    """(Its password comes from --cache-redis-password-file.)"""
    target = parse_redis_url(url)
    assert (target.username, target.password) == ("distlb", None)
    assert parse_redis_url("redis://:pw@h:6379/0").password == "pw"


def test_a_sentinel_url_names_the_sentinels_and_the_master() -> None:
    target = parse_redis_url("redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/cache/3")
    assert target.kind == "sentinel"
    assert target.nodes == (("10.0.0.1", 26379), ("10.0.0.2", 26379))
    assert (target.master_name, target.db) == ("cache", 3)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("10.0.0.5:6379", "expected redis://"),
        ("http://10.0.0.5:6379", "expected redis://"),
        ("redis://a:6379,b:6379", "several nodes"),
        ("redis://host:notaport", "bad port"),
        ("redis://host:70000", "bad port"),
        ("redis://host:6379/x", "must be a number"),
        ("redis+cluster://", "no HOST:PORT"),
        ("redis+cluster://a:7000,b", "not HOST:PORT"),
        ("redis+cluster://a:7000/1", "only database 0"),
        ("redis+cluster://a:7000?timeout=1", "options"),
        ("redis+sentinel://a:26379", "name the master"),
        ("redis+sentinel://a:26379/bad name", "name the master"),
        ("redis+sentinel://a:26379/m/1/2", "/MASTER[/DB]"),
    ],
)
def test_a_malformed_url_is_refused_with_the_reason(url: str, says: str) -> None:
    with pytest.raises(BadRedisURL, match=re.escape(says)):
        parse_redis_url(url)


def test_the_balancer_refuses_to_start_with_a_malformed_cache_url() -> None:
    with pytest.raises(ConfigError, match=r"--cache-redis .*name the master"):
        load_balancer_config(["--backend", "127.0.0.1:3632", "--cache-redis",
                              "redis+sentinel://127.0.0.1:26379"])  # fmt: skip
    config = load_balancer_config(["--backend", "127.0.0.1:3632", "--cache-redis",
                                   "redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
                                   "--cache-secret-file", str(farm_secret())])  # fmt: skip
    assert config.cache_redis is not None and not config.cache_trust_unsandboxed


def test_a_refusing_node_is_skipped_for_a_while_and_only_that_node() -> None:
    book = NodeBook()
    book.node("a:1").failed(now=100.0, slow=False, retry_s=1.0)
    assert not book.available("a:1", 100.5)
    assert book.available("b:2", 100.5)  # the other masters' slots keep serving
    assert book.available("a:1", 101.0)
    assert book.node("a:1").bypasses == 1


def test_slow_answers_trip_a_node_only_when_they_come_in_a_row() -> None:
    node = NodeBook().node("a:1")
    for _ in range(TRIP_AFTER - 1):
        node.failed(now=0.0, slow=True, retry_s=1.0)
    node.answered(0.001, True)  # an answer in between resets the run
    for _ in range(TRIP_AFTER - 1):
        node.failed(now=0.0, slow=True, retry_s=1.0)
    assert node.available(0.5)
    node.failed(now=0.0, slow=True, retry_s=1.0)
    assert not node.available(0.5)


def test_a_nodes_counts_quantiles_and_histogram() -> None:
    node = NodeBook().node("10.0.0.1:7000")
    for ms in (1, 2, 3, 4, 200):
        node.answered(ms / 1000, found=ms != 4)
    node.answered(0.0001, found=None)  # a store: no lookup
    node.skipped()
    snap = node.snapshot()
    assert snap == {"node": "10.0.0.1:7000", "hits": 4, "misses": 1, "bypasses": 1,
                    "p50_ms": 3.0, "p99_ms": 200.0}  # fmt: skip
    buckets = dict(node.histogram())
    assert buckets["+Inf"] == 5 and buckets[repr(LATENCY_BUCKETS_S[-1])] == 5
    assert buckets["0.001"] == 1 and buckets["0.0025"] == 2 and buckets["0.25"] == 5
    assert node.seconds_sum == pytest.approx(0.210)


def _backend(
    sandboxed: bool, identity: CompilerIdentity | None, sealed: frozenset[str] | None = None
) -> Backend:
    backend = Backend(BackendSpec.parse("10.0.0.1:3632"))
    identities = {"gcc": identity} if identity is not None else {}
    if sealed is None:
        sealed = frozenset(identities) if sandboxed else frozenset()
    backend.on_report(
        BackendReport(4, 0, identities=identities, sandboxed=sandboxed, sealed=sealed)
    )
    return backend


def test_only_sealed_backends_with_an_identity_are_sources() -> None:
    assert source_identity(_backend(True, GCC), "gcc", trust_unsandboxed=False) == GCC
    assert source_identity(_backend(False, GCC), "gcc", trust_unsandboxed=False) is None
    assert source_identity(_backend(False, GCC), "gcc", trust_unsandboxed=True) == GCC
    # Sandboxed, but this compiler's jobs do not run sealed (its sealed sandbox failed
    # its start check): its compiles could read server files its key leaves out.
    unsealed = _backend(True, GCC, sealed=frozenset({"clang"}))
    assert source_identity(unsealed, "gcc", trust_unsandboxed=False) is None
    assert source_identity(unsealed, "gcc", trust_unsandboxed=True) == GCC
    # No identity (a distccd): never, trusted or not.
    assert source_identity(_backend(True, None), "gcc", trust_unsandboxed=True) is None
    distccd = Backend(BackendSpec.parse("10.0.0.2:3632,kind=distccd"))
    assert source_identity(distccd, "gcc", trust_unsandboxed=True) is None
    assert source_identity(None, "gcc", trust_unsandboxed=True) is None


def test_workers_add_their_counts_per_node() -> None:
    def worker(nodes: list[dict[str, object]]) -> dict[str, object]:
        return {"totals": {}, "backends": [], "cache": {"hits": 0, "nodes": nodes}}

    a = {"node": "a:1", "hits": 2, "misses": 1, "bypasses": 0, "p50_ms": 0.3, "p99_ms": 1.0}
    a_too = {**a, "hits": 5, "bypasses": 2, "p50_ms": 9.0}
    b = {"node": "b:2", "hits": 1, "misses": 0, "bypasses": 0, "p50_ms": 0.4, "p99_ms": 0.9}
    merged = merge_status(worker([a]), [worker([a_too, b]), None])
    nodes = {n["node"]: n for n in merged["cache"]["nodes"]}
    assert (nodes["a:1"]["hits"], nodes["a:1"]["bypasses"], nodes["a:1"]["p50_ms"]) == (7, 2, 0.3)
    assert nodes["b:2"] == b


class RecordingCacheForTests(ResultCache):
    """Records what would be stored (no store, no loop)."""

    def __init__(self) -> None:
        super().__init__([MemoryStore(1 << 20)], b"k" * 32)
        self.stored: list[CompilerIdentity] = []

    def store(self, job: JobDigest, identity: CompilerIdentity, result: CachedResult) -> None:
        self.stored.append(identity)


def test_a_reply_is_stored_only_under_the_identity_its_backend_said_when_the_job_was_sent() -> None:
    """A backend upgraded while a reply was on its way reports the new identity by the
    time the reply comes: the old compiler's object must not go under it (a fifteenth
    review)."""
    pool = Pool([], PoolSettings())  # never started
    backend = _backend(True, GCC)
    pool.backends = {backend.name: backend}
    cache = RecordingCacheForTests()
    front = CacheFront(cache, pool, trust_unsandboxed=False)
    job = job_digest(1, ["gcc", "-c", "a.c", "-o", "a.o"], b'# 1 "/p/a.c"\nint x;\n')
    request = Request(1, ("gcc", "-c", "a.c", "-o", "a.o"), b"")
    outcome = Dispatched(Reply(1, 0, b"", b"", b"\x7fELF"), backend.name, 1, False)
    when_sent = front.identities_now("gcc")
    front.store(job, request, outcome, when_sent)
    assert cache.stored == [GCC]
    newer = CompilerIdentity(GCC.version, "b" * 64)
    backend.on_report(BackendReport(4, 0, identities={"gcc": newer}, sandboxed=True,
                                    sealed=frozenset({"gcc"})))  # fmt: skip
    front.store(job, request, outcome, when_sent)  # (sent before the new report)
    assert cache.stored == [GCC] and front.not_stored_changed == 1
    front.store(job, request, outcome, front.identities_now("gcc"))
    assert cache.stored == [GCC, newer]
