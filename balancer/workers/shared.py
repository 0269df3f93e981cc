"""What the workers of one balancer (``--workers N``) share: per backend, the slots each
worker holds there (its jobs and probes), so that together they never send a backend
more jobs than it has free slots.

One anonymous shared mapping, made before the workers are forked: per backend an entry
(its name, then a count per worker), found by hashing the name (linear probing; an
entry is claimed under a lock on the table and kept for the balancer's life, so a
reload that drops a backend and adds it back finds it again). A worker writes only its
own counts; it reads the others' to know what they hold. A slot is taken under a lock
on that backend's entry after the counts are read again (``fcntl`` byte-range locks on
one temp file: the kernel drops a worker's locks when it dies, so a crash cannot leave
a backend locked). Each slot given back is told to the other workers as the entry's
index on a pipe of theirs, so their pick index and their waiting jobs keep up.

Fair share's counts (balancer/workers/shares.py) are made with these and live as long.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import mmap
import os
import struct
import tempfile
import time
from collections.abc import Iterator

from balancer.workers.shares import ShareTable

NAME_BYTES = 120
DEFAULT_CAPACITY = 4096
"""Backends one balancer can ever name (entries are not freed: a reload may bring a name back)."""
_INDEX = struct.Struct("=I")


class SharedCountsFull(RuntimeError):
    """Every entry is taken: more distinct backends than :data:`DEFAULT_CAPACITY`."""


class SharedCounts:
    def __init__(self, workers: int, capacity: int = DEFAULT_CAPACITY) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.workers = workers
        self.capacity = capacity
        self._counts = struct.Struct(f"={workers}i")
        self._wants = struct.Struct(f"={workers}d")
        self._entry = -(-(NAME_BYTES + self._counts.size) // 8) * 8
        # MAP_SHARED | MAP_ANONYMOUS: the forked workers see one and the same memory:
        # first, per worker, until when it wants to hear of slots given back (its jobs
        # wait for one), then the entries.
        self._header = -(-(8 * workers) // 8) * 8
        self._map = mmap.mmap(-1, self._header + capacity * self._entry)
        self._locks = tempfile.TemporaryFile(prefix="distlb-workers-")  # noqa: SIM115 (for life)
        self._pipes = [os.pipe() for _ in range(workers)]
        for read_end, write_end in self._pipes:
            os.set_blocking(read_end, False)
            os.set_blocking(write_end, False)
        self.shares = ShareTable(workers)
        """Per client share: the workers' recent compile time, running and waiting jobs."""
        self.me = 0
        """The worker this process is (set by :meth:`become` after the fork)."""
        self.dropped = 0
        """Changes not told to a worker whose pipe was full (it reads them late or has died)."""

    # -- in a worker ------------------------------------------------------------

    def become(self, worker: int) -> None:
        """Called in worker ``worker`` after the fork."""
        self.me = worker
        self.shares.become(worker)

    def slot(self, name: str) -> SharedSlot:
        """The entry of backend ``name``, claimed if it is new."""
        encoded = name.encode("utf-8")[:NAME_BYTES]
        start = int.from_bytes(hashlib.blake2b(encoded, digest_size=8).digest(), "big")
        with self._locked(0):
            for step in range(self.capacity):
                index = (start + step) % self.capacity
                offset = self._header + index * self._entry
                stored = self._map[offset : offset + NAME_BYTES].rstrip(b"\0")
                if stored == encoded:
                    return SharedSlot(self, index)
                if not stored:
                    self._map[offset : offset + NAME_BYTES] = encoded.ljust(NAME_BYTES, b"\0")
                    return SharedSlot(self, index)
        raise SharedCountsFull(f"more than {self.capacity} backends")

    def counts(self, index: int) -> tuple[int, ...]:
        """Per worker, the slots it holds on the backend of entry ``index``."""
        return self._counts.unpack_from(self._map, self._header + index * self._entry + NAME_BYTES)

    def want_changes(self, until: float) -> None:
        """Hear of slots the others give back until ``until`` (``time.monotonic()``):
        this worker has jobs waiting for one."""
        struct.pack_into("=d", self._map, 8 * self.me, until)

    def add(self, index: int, delta: int) -> None:
        """Change this worker's count on entry ``index``; a slot given back is told to
        the others whose jobs wait for one (:meth:`want_changes`). A slot taken is not,
        nor one given back to a worker with no job waiting: a worker's pick checks what
        it draws against these counts, and takes a slot only under the entry's lock
        after reading them again, so a view that is behind costs a redraw, and the
        worker's index catches up with a backend at its own next change there."""
        offset = self._header + index * self._entry + NAME_BYTES + 4 * self.me
        (value,) = struct.unpack_from("=i", self._map, offset)
        struct.pack_into("=i", self._map, offset, value + delta)
        if delta >= 0:
            return
        message = _INDEX.pack(index)
        now = time.monotonic()  # (one clock for every process of the machine)
        wants = self._wants.unpack_from(self._map, 0)
        for worker, (_, write_end) in enumerate(self._pipes):
            if worker != self.me and wants[worker] > now:
                try:
                    os.write(write_end, message)
                except BlockingIOError:
                    self.dropped += 1

    def lock(self, index: int) -> None:
        """Hold entry ``index`` against the other workers (a slot is taken under it)."""
        fcntl.lockf(self._locks.fileno(), fcntl.LOCK_EX, 1, 1 + index)

    def unlock(self, index: int) -> None:
        fcntl.lockf(self._locks.fileno(), fcntl.LOCK_UN, 1, 1 + index)

    @contextlib.contextmanager
    def _locked(self, byte: int) -> Iterator[None]:
        fd = self._locks.fileno()
        fcntl.lockf(fd, fcntl.LOCK_EX, 1, byte)
        try:
            yield
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, byte)

    @property
    def changes_fd(self) -> int:
        """This worker's pipe: the entries the others changed (see :meth:`read_changes`)."""
        return self._pipes[self.me][0]

    def read_changes(self) -> set[int]:
        """The entries other workers changed since the last call."""
        changed: set[int] = set()
        while True:
            try:
                data = os.read(self.changes_fd, 65536)
            except BlockingIOError:
                return changed
            if not data:
                return changed
            usable = len(data) - len(data) % _INDEX.size  # writes of 4 bytes are atomic
            changed.update(i for (i,) in _INDEX.iter_unpack(data[:usable]))

    # -- in the supervisor ------------------------------------------------------

    def forget(self, worker: int) -> None:
        """A worker died: what it held died with it (its connections closed)."""
        self.shares.forget(worker)
        for index in range(self.capacity):
            offset = self._header + index * self._entry
            if self._map[offset] == 0:
                continue
            struct.pack_into("=i", self._map, offset + NAME_BYTES + 4 * worker, 0)


class SharedSlot:
    """One backend's entry, as :class:`balancer.routing.backend.Backend` uses it."""

    __slots__ = ("_shared", "index")

    def __init__(self, shared: SharedCounts, index: int) -> None:
        self._shared = shared
        self.index = index

    def add(self, delta: int) -> None:
        self._shared.add(self.index, delta)

    def elsewhere(self) -> int:
        """Slots the other workers hold there now."""
        counts = self._shared.counts(self.index)
        return sum(counts) - counts[self._shared.me]

    def lock(self) -> None:
        self._shared.lock(self.index)

    def unlock(self) -> None:
        self._shared.unlock(self.index)
