"""Who a job runs as: the compile user, and per-job uids from a range."""

from __future__ import annotations

import pwd
from collections import deque
from dataclasses import dataclass


class SandboxError(Exception):
    """The sandbox cannot work here; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class CompileUser:
    """Who a compile runs as, outside any namespace."""

    name: str
    uid: int
    gid: int


class JobIdentities:
    """Per-job uids from a range, handed out so that no two running jobs share one.

    A uid comes back only after its job's sandbox is gone (its pid namespace takes
    every process of the job with it), and is reused least recently first."""

    def __init__(self, first: int, last: int) -> None:
        if first <= 0 or last < first:
            raise SandboxError(f"--job-uids {first}-{last} is not a range of non-root uids")
        self.first, self.last = first, last
        self._free: deque[int] = deque(range(first, last + 1))

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def check_unused(self) -> None:
        """Refuse a range that overlaps accounts of this machine."""
        for entry in pwd.getpwall():
            if self.first <= entry.pw_uid <= self.last:
                raise SandboxError(
                    f"--job-uids {self.first}-{self.last} holds the account "
                    f"{entry.pw_name!r} ({entry.pw_uid}): choose a range no account uses"
                )

    @property
    def free(self) -> int:
        return len(self._free)

    def acquire(self) -> CompileUser:
        if not self._free:
            raise SandboxError("no job uid is free (--job-uids is smaller than --jobs)")
        uid = self._free.popleft()
        return CompileUser(f"job-{uid}", uid, uid)

    def release(self, user: CompileUser) -> None:
        self._free.append(user.uid)
