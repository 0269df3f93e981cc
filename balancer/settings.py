"""The settings the balancer's parts run on, built from the config by field name
(``balancer/config.py``, daemon/config.py ``settings_from``) (floor 1).

What lives here: frozen dataclasses of values with their defaults (the single source
the flags' help and the README are checked against). What must not: reading files or
flags (``config.py``, ``cli.py``), or any behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PoolSettings:
    poll_interval_s: float = 0.5
    probe_interval_s: float = 1.0
    probe_timeout_s: float = 1.0
    rise: int = 2
    fall: int = 2
    probe_compiler: str = "gcc"
    fast_poll_interval_s: float = 0.1
    """Report polling while jobs wait for a slot (HAProxy's ``fastinter`` in spirit)."""
    report_wait_s: float = 5.0
    """How long a distlb server may hold a report request until its state changes
    enough (a long poll); 0: ask every poll interval."""
    idle_poll_interval_s: float = 5.0
    """Plain report polls (a backend without the long poll: distccd, or ``report_wait_s``
    0) while no job or probe of ours is on it and none waits for a slot: this often
    instead of every ``poll_interval_s`` (HAProxy's ``inter`` against ``fastinter`` in
    spirit); a job sent there, or one that waits, brings the pace back at once."""
    idle_probe_interval_s: float = 30.0
    """Compile probes of a healthy backend whose reports keep coming: this often
    instead of every ``probe_interval_s`` (jobs that finish well count as probes)."""


@dataclass(frozen=True)
class DispatchSettings:
    queue_timeout_s: float = 10.0
    max_attempts: int = 3
    hedge_after_s: float | None = None
    """Fixed hedge delay; None: the larger of ``hedge_min_s`` and 3 x the backend's p95."""
    hedge_min_s: float = 5.0
    tail_hedge: float = 2.0
    """Back up a running job on a free backend that would finish it this many times
    sooner, while no job waits for a slot (balancer/routing/estimates.py); 0 turns it off."""
    wait_for_faster: float = 1.25
    """A big job waits for a faster backend to come free instead of taking a slower
    free one, when it would finish this many times sooner (balancer/routing/estimates.py);
    0: off."""
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
    fair_share: bool = True
    """While jobs wait, a freed slot goes to the client share that used least compile
    time recently (balancer/routing/fair.py); off: to the job waiting longest."""
    fair_memory_s: float = 60.0
    """How long a share's compile time counts: it decays by e^(-age / this)."""
    cache_trust_unsandboxed: bool = False
    """Also store results of backends that compile without a sandbox
    (balancer/dispatch/caching.py)."""
    cache_share_across_dirs: bool = False
    """Key debug builds without prefix maps apart from their checkout's directory too
    (cache/path_rules.py)."""
