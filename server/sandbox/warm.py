"""Sandboxes started ahead of their jobs.

Setting up a bubblewrap sandbox (namespaces, mounts) takes about 10 ms here, half of
it waiting on the kernel: paid while a client waits, it was most of what the sandbox
added to a job. So for each slot one sandbox is kept ready, its job directory bound
and its limits set, running only a shell that waits for one line on its stdin: the
job's command, quoted. When a job comes, its source is written into the directory
and the line is sent; the shell execs the compiler, in the sandbox that was waiting.
While the job compiles, another is started for the next one.

A job that finds no sandbox ready starts one of its own the same way (``spawn.py``
starts, feeds, pins and kills every job's process; this module only keeps some ready).
"""

from __future__ import annotations

from collections import deque

import structlog

from server.sandbox.launcher import Sandbox, SandboxError
from server.sandbox.spawn import Started, kill, spawn

log = structlog.get_logger("distlb.server.warm")


class WarmPool:
    """Up to ``size`` sandboxes kept ready (one per slot)."""

    def __init__(self, sandbox: Sandbox, jobs_root: str, size: int) -> None:
        self.sandbox = sandbox
        self.jobs_root = jobs_root
        self.size = size
        self._ready: deque[Started] = deque()
        self.taken = 0
        self.cold = 0
        self.closed = False

    def snapshot(self) -> dict[str, int]:
        """What /status shows: sandboxes ready now, jobs that found one, jobs that had
        to start their own (each of those waited for a sandbox to be set up)."""
        return {"ready": len(self._ready), "taken": self.taken, "cold": self.cold}

    def take(self) -> Started | None:
        """A ready sandbox, or None (start one)."""
        while self._ready:
            started = self._ready.popleft()
            if started.proc.poll() is None:
                self.taken += 1
                return started
            log.warning("warm_sandbox_gone", returncode=started.proc.returncode)
            self.discard(started)
        return None

    def fill(self) -> None:
        """Start sandboxes until ``size`` wait, as far as uids allow (a uid still held
        by a job being cleaned up comes back, and this is called again, after it)."""
        identities = self.sandbox.identities
        while (
            not self.closed
            and len(self._ready) < self.size
            and (identities is None or identities.free)
        ):
            try:
                self._ready.append(spawn(self.sandbox, self.jobs_root, None))
            except (OSError, SandboxError) as exc:
                log.warning("warm_sandbox_failed", reason=str(exc))
                return

    def renew(self, sandbox: Sandbox) -> None:
        """After a reload: end the sandboxes started with the old settings (limits,
        mounts, niceness) and start new ones."""
        while self._ready:
            self.discard(self._ready.popleft())
        self.sandbox = sandbox
        self.fill()

    def discard(self, started: Started) -> None:
        kill(started)
        self.sandbox.job_dirs.remove(started.job_dir)  # (no job ran in it)
        self.sandbox.release_user(started.user)

    def close(self) -> None:
        self.closed = True
        while self._ready:
            self.discard(self._ready.popleft())
