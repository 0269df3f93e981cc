"""The shared result cache on a job's path: look a job up before it is sent, store a good
reply after, and decide whose replies may be stored at all.

A reply is stored only when the backend that compiled it says which compiler it ran
(its identity: version line and binary digest, from a distlb server's report) and runs
that compiler's jobs sealed (``"sandbox": "sealed"`` in its report: a sandbox that holds
its toolchain and nothing else, server/sandbox/sealed.py), unless the operator trusts
unsandboxed backends (``--cache-trust-unsandboxed``). A shared entry is served to every
developer: one from a server whose compiles could read or write what they like is a
way for one job to poison other people's builds, and one whose compile could read a
file its key leaves out (an ``.incbin`` of a server's file) is a wrong object for the
next server's client. distccd backends say neither.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from balancer.dispatch.attempts import Dispatched
from balancer.dispatch.pump import PumpRoute
from balancer.pool.pool import Pool
from balancer.routing.backend import Backend
from cache import CachedResult, CompilerIdentity, JobDigest, ResultCache
from wire import Reply, Request


def source_identity(
    backend: Backend | None, compiler: str, trust_unsandboxed: bool
) -> CompilerIdentity | None:
    """The identity to store ``backend``'s result of a ``compiler`` job under, or None
    when its results must not be shared (no identity, or not sealed and no trust)."""
    if backend is None:
        return None
    identity = backend.identity(compiler)
    if identity is None or not (backend.seals(compiler) or trust_unsandboxed):
        return None
    return identity


PUMP_REPORT_FRESH_S = 1.0
"""A pump result is stored only when its backend's report is known to be at most this
old: a server whose system headers change turns pump jobs away for 2 s after it reports
the new fingerprint (server/reloading.py ``UPGRADE_SETTLE_S``), so a job it answered
was compiled with headers its report of 2 s before its start already named. A held
report request (a long poll) is answered at once on such a change: current while held.
(A twenty-first review stored new headers' objects under the old fingerprint through a
balancer that polled every 30 s.)"""


def _current(backend: Backend | None) -> bool:
    if backend is None:
        return False
    return backend.long_polling or time.monotonic() - backend.report_at <= PUMP_REPORT_FRESH_S


class CacheFront:
    """Lookups and stores for one dispatcher."""

    def __init__(self, cache: ResultCache, pool: Pool, trust_unsandboxed: bool) -> None:
        self.cache = cache
        self.pool = pool
        self.trust_unsandboxed = trust_unsandboxed
        self.not_stored_unsandboxed = 0
        """Good replies not stored because their backend compiles without a sandbox."""
        self.not_stored_changed = 0
        """Good replies not stored because their backend's identity (or a pump job's
        system headers) changed meanwhile, or its report is too old to tell."""

    async def lookup(self, job: JobDigest, request: Request) -> Dispatched | None:
        """A cached result from a compiler identity the job could be sent to now: one a
        healthy backend runs, and, with ``--compiler-identity`` majority or pinned, the
        chosen one (a result of another version must not join the build; a review saw
        a mismatched backend's object served). Its warnings name this job's files. A miss
        whose job differs from a stored one only by paths is counted (``path_misses``)."""
        compiler = request.argv[0]
        backends = self.pool.backends
        excluded = self.pool.routing.route(backends.values(), compiler).exclude
        found = {
            b.identity(compiler) for b in backends.values() if b.healthy and b.name not in excluded
        }
        identities = sorted((i for i in found if i is not None), key=lambda i: i.token)
        for identity in identities:
            result = await self.cache.lookup(job, identity)
            if result is not None and result.deps is None:  # (a pump entry never is one)
                reply = Reply(request.protocol, 0, result.stderr, result.stdout, result.obj)
                return Dispatched(reply, "cache", 0, False, [], cached=True)
        self.cache.note_miss(job, identities)
        return None

    def identities_now(self, compiler: str) -> dict[str, CompilerIdentity | None]:
        """What each backend says it runs for ``compiler`` now: taken when a job is
        sent, for :meth:`store` to compare with when its reply comes."""
        return {name: b.identity(compiler) for name, b in self.pool.backends.items()}

    def store(
        self,
        job: JobDigest,
        request: Request,
        outcome: Dispatched,
        when_sent: dict[str, CompilerIdentity | None],
    ) -> None:
        """Store a good reply in the background, if its backend may be a source and
        said the same identity when the job was sent (:meth:`identities_now`): one
        upgraded while the reply was on its way would otherwise have the old
        compiler's object stored under the new identity (a fifteenth review)."""
        if outcome.reply.status != 0:
            return
        backend = self.pool.backends.get(outcome.backend)
        identity = source_identity(backend, request.argv[0], self.trust_unsandboxed)
        if identity is None:
            if backend is not None and backend.identity(request.argv[0]) is not None:
                self.not_stored_unsandboxed += 1
            return
        if when_sent.get(outcome.backend) != identity:
            self.not_stored_changed += 1
            return
        reply = outcome.reply
        result = CachedResult(obj=reply.obj, stderr=reply.stderr, stdout=reply.stdout)
        self.cache.store(job, identity, result)

    async def pump_job(
        self, route: PumpRoute, request: Request, compiled: Callable[[], Awaitable[Dispatched]]
    ) -> Dispatched:
        """A pump job with a key (``route.key``): its result from the cache, as a compiler
        that backends serving it run makes it, or compiled and, when good, stored, if
        its backend may be a source and said the same identity and system headers
        (``route.headers``) when the job was sent and when it answered (a server whose
        headers change turns its jobs away until its report says so:
        server/pump_headers.py)."""
        assert route.key is not None
        compiler, backends = route.compiler, self.pool.backends
        excluded = self.pool.routing.route(backends.values(), compiler).exclude
        found = {
            b.identity(compiler)
            for b in backends.values()
            if b.healthy and b.name not in excluded and route.allows(b)
        }
        for identity in sorted((i for i in found if i is not None), key=lambda i: i.token):
            result = await self.cache.lookup(route.key, identity)
            if result is not None and result.deps is not None:
                reply = Reply(request.protocol, 0, result.stderr, result.stdout, result.obj,
                              result.deps)  # fmt: skip
                return Dispatched(reply, "cache", 0, False, [], cached=True)
        when_sent = self._pump_sources(compiler)
        outcome = await compiled()
        backend = backends.get(outcome.backend)
        source = source_identity(backend, compiler, self.trust_unsandboxed)
        if outcome.reply.status != 0 or source is None or outcome.reply.deps is None:
            if source is None and backend is not None and backend.identity(compiler):
                self.not_stored_unsandboxed += 1
            return outcome
        said = (source, route.headers)
        now = self._pump_sources(compiler)
        if (
            when_sent.get(outcome.backend) != said
            or now.get(outcome.backend) != said
            or not _current(backend)
        ):
            self.not_stored_changed += 1
            return outcome
        reply = outcome.reply
        result = CachedResult(reply.obj, reply.stderr, reply.stdout, deps=reply.deps)
        self.cache.store(route.key, source, result)
        return outcome

    def _pump_sources(self, compiler: str) -> dict[str, tuple[CompilerIdentity | None, str]]:
        """What each backend says it runs for pump jobs of ``compiler``: its identity and
        its system headers' fingerprint ("" when it serves none)."""
        return {
            name: (
                b.identity(compiler),
                b.report.pump.get(compiler, ((), ""))[1] if b.report is not None else "",
            )
            for name, b in self.pool.backends.items()
        }
