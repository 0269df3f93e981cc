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

A sandbox is of a kind: the sealed sandbox of one compiler (server/sandbox/sealed.py),
or the sandbox every other job runs in (None). The pool keeps the kinds of the last
``size`` jobs ready, as many of each as those jobs asked for: a farm that compiles with
one compiler finds its sandbox ready every time; a new mix takes over as jobs come.
"""

from __future__ import annotations

import os
from collections import Counter, deque

import structlog

from server.sandbox.identities import SandboxError
from server.sandbox.launcher import Sandbox
from server.sandbox.spawn import Started, kill, spawn

log = structlog.get_logger("distlb.server.warm")


class WarmPool:
    """Up to ``size`` sandboxes kept ready (one per slot)."""

    def __init__(
        self, sandbox: Sandbox, jobs_root: str, size: int, first: str | None = None
    ) -> None:
        """``first``: the kind to keep ready before any job has come."""
        self.sandbox = sandbox
        self.jobs_root = jobs_root
        self.size = size
        self._ready: deque[Started] = deque()
        self._wanted: deque[str | None] = deque([first] * size, maxlen=max(1, size))
        """The kinds the last ``size`` jobs asked for."""
        self.taken = 0
        self.cold = 0
        self.closed = False

    def snapshot(self) -> dict[str, int]:
        """What /status shows: sandboxes ready now, jobs that found one, jobs that had
        to start their own (each of those waited for a sandbox to be set up)."""
        return {"ready": len(self._ready), "taken": self.taken, "cold": self.cold}

    def take(self, sealed: str | None = None) -> Started | None:
        """A ready sandbox of the kind (``sealed``: that compiler's sealed sandbox), or
        None (start one)."""
        self._wanted.append(sealed)
        for started in [s for s in self._ready if s.sealed == sealed]:
            self._ready.remove(started)
            if started.proc.poll() is None:
                self.taken += 1
                return started
            log.warning("warm_sandbox_gone", returncode=started.proc.returncode)
            self.discard(started)
        return None

    def fill(self) -> None:
        """Start sandboxes until ``size`` wait, of the kinds the last jobs asked for, as
        far as uids allow (a uid still held by a job being cleaned up comes back, and
        this is called again, after it); a ready one of a kind asked for less often
        makes room for one asked for more."""
        identities = self.sandbox.identities
        target = Counter(k for k in self._wanted if k is None or k in self.sandbox.sealed)
        have = Counter(s.sealed for s in self._ready)
        lacking = [kind for kind, n in target.items() for _ in range(n - have[kind])]
        for kind in lacking:
            if self.closed or (identities is not None and not identities.free):
                return
            if len(self._ready) >= self.size:
                spare = next((s for s in self._ready if have[s.sealed] > target[s.sealed]), None)
                if spare is None:
                    return
                self._ready.remove(spare)
                have[spare.sealed] -= 1
                self.discard(spare)
            try:
                self._ready.append(spawn(self.sandbox, self.jobs_root, None, sealed=kind))
            except (OSError, SandboxError) as exc:
                log.warning("warm_sandbox_failed", reason=str(exc))
                return
            have[kind] += 1

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


def first_kind(sandbox: Sandbox) -> str | None:
    """The kind of sandbox to keep ready before any job: the sealed one of ``cc``'s
    binary or else of a sealed compiler (a farm's usual compiler), else None."""
    kinds = sandbox.sealed_kinds
    for path in sorted(kinds):
        if os.path.basename(path) in ("cc", "gcc"):
            return kinds[path]
    return min(kinds.values()) if kinds else None
