"""What one job tries, and how it ends: the dispatcher's settings and records
(balancer/dispatch.py runs the attempt loop over them)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from balancer.activity import attach
from balancer.backends import Backend
from balancer.tail import Running
from wire import Reply, Request

MAX_TURNED_AWAY = 64
"""Turn-aways one job may meet (each is a wait, bounded by the queue timeout too)."""


@dataclass(frozen=True)
class DispatchSettings:
    queue_timeout_s: float = 10.0
    max_attempts: int = 3
    hedge_after_s: float | None = None
    """Fixed hedge delay; None: the larger of ``hedge_min_s`` and 3 x the backend's p95."""
    hedge_min_s: float = 5.0
    tail_hedge: float = 2.0
    """Back up a running job on a free backend that would finish it this many times
    sooner, while no job waits for a slot (balancer/tail.py); 0 turns it off."""
    wait_for_faster: float = 1.25
    """A big job waits for a faster backend to come free instead of taking a slower
    free one, when it would finish this many times sooner (balancer/tail.py); 0: off."""
    connect_timeout_s: float = 1.0
    attempt_timeout_s: float = 1500.0
    """Longest wait for one backend's reply (beyond a server's 1200 s job lifetime)."""
    attempt_deadline_factor: float = 20.0
    """An attempt on a backend with a latency history gives up after this many times
    its p99 (scaled by the job's size), but never before ``attempt_deadline_min_s``."""
    attempt_deadline_min_s: float = 60.0
    backend_idle_timeout_s: float = 10.0
    """Sending a request, or receiving a reply once it has begun, may pause this long
    (plus a second per MiB): a backend that hangs or trickles mid-transfer is caught."""
    max_hedges: int = 2
    """Late and tail hedges per job (rescues from a backend that left rotation are
    bounded by the attempts instead)."""
    cache_trust_unsandboxed: bool = False
    """Also store results of backends that compile without a sandbox (balancer/caching.py)."""
    cache_share_across_dirs: bool = False
    """Key debug builds without prefix maps apart from their checkout's directory too
    (cache/path_rules.py)."""


class AllFailed(Exception):
    """Every attempt failed; the last reason is the message."""

    history: list[dict[str, object]] = []


@dataclass
class Dispatched:
    """How a job was answered: the reply, and where it came from."""

    reply: Reply
    backend: str
    attempts: int
    hedged: bool
    tried: list[str] = field(default_factory=list)
    cached: bool = False
    queued_s: float = 0.0
    """Time spent waiting for a backend with a free slot."""
    history: list[dict[str, object]] = field(default_factory=list)
    """Every attempt: backend, kind, result."""


@dataclass(eq=False)
class Attempt:
    """One sending of a job to one backend."""

    backend: Backend
    task: asyncio.Task[Reply]
    running: Running
    kind: str
    """first, retry (after a failure or turn-away), late or tail (hedges), rescue."""
    started: float
    late_at: float
    deadline: float
    result: str = ""


@dataclass(eq=False)
class JobAttempts:
    """Everything one job has tried, and what it is waiting on."""

    request: Request
    big: bool
    factor: float
    affinity: bytes | None
    running: list[Attempt] = field(default_factory=list)
    history: list[Attempt] = field(default_factory=list)
    failed: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)
    """Backends that answered it "no such compiler" (balancer/compilers.py)."""
    failures: int = 0
    hedges: int = 0
    last_error: str = "no attempt made"
    winner: Attempt | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when something the job may act on changed: a backend it runs on left
    rotation, or a faster backend came free for a tail hedge."""

    def __post_init__(self) -> None:
        attach(self)  # (the dashboard's view of the job sees its attempts)

    @property
    def sends(self) -> int:
        """Attempts that were not turned away."""
        return sum(1 for a in self.history if a.result != "turned_away")

    def end(self, attempt: Attempt, result: str) -> None:
        attempt.result = attempt.result or result

    def describe(self) -> list[dict[str, object]]:
        """Every attempt, for the job_done line: backend, why it was sent, how it ended."""
        return [
            {"backend": a.backend.name, "kind": a.kind, "result": a.result or "running"}
            for a in self.history
        ]
