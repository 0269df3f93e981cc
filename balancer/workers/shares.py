"""What the workers of one balancer share for fair share (balancer/routing/fair.py): per
client share (a principal, an address or a named group), each worker's recent compile
time there, its jobs running and its jobs waiting for a slot.

One anonymous shared mapping made before the workers fork (with one worker: the same,
unshared). A header holds how many entries are claimed and, per worker, how many of its
jobs wait; then the entries, claimed in order under a lock on a temp file and kept for
the balancer's life (a share found again is the same entry). An entry is the share's
name, then one record per worker: the worker's recent compile seconds and when it last
wrote them (the reader decays them to now), the sum of its running jobs' start times
and how many run (so their time so far counts at once, not only when they end), how
many of its jobs wait and, as bits, for which kinds of job (a kind: a compiler, pump or
not, hashed to one of 32 bits). A worker writes only its own records.

When every entry is taken (more than :data:`CAPACITY` shares in the balancer's life),
new shares count in the last entry, :data:`OVERFLOW`, together.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import mmap
import struct
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

NAME_BYTES = 120
CAPACITY = 4096
OVERFLOW = "(others)"
_RECORD = struct.Struct("=dddiiI4x")  # usage, usage_at, started_sum, running, waiting, kinds
_HEADER_WORDS = 2  # claimed, padding


def kind_bit(kind: str) -> int:
    """The bit of a kind of job (jobs of one kind can take the same backends)."""
    return 1 << (zlib.crc32(kind.encode()) % 32)


@dataclass(frozen=True)
class ShareUse:
    """One share's use now, summed over the workers."""

    name: str
    recent_s: float
    """Recent compile seconds (decayed), its running jobs' time so far included."""
    running: int
    waiting: int
    kinds: int
    """Bits of the kinds of job that wait (:func:`kind_bit`)."""


class ShareTable:
    def __init__(self, workers: int = 1, capacity: int = CAPACITY) -> None:
        if workers < 1 or capacity < 1:
            raise ValueError("workers and capacity must be at least 1")
        self.workers = workers
        self.capacity = capacity
        self._entry = NAME_BYTES + workers * _RECORD.size
        self._header = 8 * (_HEADER_WORDS + workers)
        self._map = mmap.mmap(-1, self._header + capacity * self._entry)
        self._lock = tempfile.TemporaryFile(prefix="distlb-shares-")  # noqa: SIM115 (for life)
        self._known: dict[str, int] = {}
        self.me = 0

    def become(self, worker: int) -> None:
        self.me = worker
        self._known.clear()

    # -- entries ----------------------------------------------------------------

    def _claimed(self) -> int:
        (claimed,) = struct.unpack_from("=q", self._map, 0)
        return min(self.capacity, int(claimed))

    def _name(self, index: int) -> str:
        offset = self._header + index * self._entry
        return self._map[offset : offset + NAME_BYTES].rstrip(b"\0").decode("utf-8", "replace")

    def entry(self, name: str) -> int:
        """The entry of share ``name``, claimed if it is new."""
        key = _fit(name)
        found = self._known.get(key)
        if found is not None:
            return found
        with self._locked():
            claimed = self._claimed()
            for index in range(claimed):
                if self._name(index) == key:
                    self._known[key] = index
                    return index
            if claimed >= self.capacity - 1:
                key, index = OVERFLOW, self.capacity - 1
                if claimed < self.capacity:
                    self._write_name(index, OVERFLOW)
                    struct.pack_into("=q", self._map, 0, self.capacity)
            else:
                index = claimed
                self._write_name(index, key)
                struct.pack_into("=q", self._map, 0, claimed + 1)
        if len(self._known) >= 2 * self.capacity:
            self._known.clear()  # (names past the table's capacity: found again by a scan)
        self._known[_fit(name)] = index
        return index

    def _write_name(self, index: int, name: str) -> None:
        offset = self._header + index * self._entry
        self._map[offset : offset + NAME_BYTES] = name.encode("utf-8").ljust(NAME_BYTES, b"\0")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.lockf(self._lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(self._lock.fileno(), fcntl.LOCK_UN)

    # -- this worker's records --------------------------------------------------

    def _offset(self, index: int, worker: int) -> int:
        return self._header + index * self._entry + NAME_BYTES + worker * _RECORD.size

    def _mine(self, index: int) -> list[float | int]:
        return list(_RECORD.unpack_from(self._map, self._offset(index, self.me)))

    def _put(self, index: int, record: list[float | int]) -> None:
        _RECORD.pack_into(self._map, self._offset(index, self.me), *record)

    def started(self, index: int, now: float) -> None:
        """A job of this worker began to hold a slot for the share at ``now``."""
        record = self._mine(index)
        record[2] += now
        record[3] += 1
        self._put(index, record)

    def ended(self, index: int, started: float, now: float, memory_s: float) -> None:
        """That job gave its slot back: its time is added to the share's recent use."""
        usage, at, started_sum, running, waiting, kinds = self._mine(index)
        usage = _decayed(float(usage), now - float(at), memory_s) + max(0.0, now - started)
        running = max(0, int(running) - 1)
        started_sum = float(started_sum) - started if running else 0.0
        self._put(index, [usage, now, started_sum, running, waiting, kinds])

    def set_waiting(self, index: int, count: int, kinds: int) -> None:
        """How many of this worker's jobs of the share wait now, and of which kinds."""
        record = self._mine(index)
        delta = count - int(record[4])
        record[4], record[5] = count, kinds
        self._put(index, record)
        if delta:
            offset = 8 * (_HEADER_WORDS + self.me)
            (total,) = struct.unpack_from("=q", self._map, offset)
            struct.pack_into("=q", self._map, offset, max(0, total + delta))

    # -- everyone's ---------------------------------------------------------------

    def waiting_elsewhere(self) -> int:
        """Jobs of the other workers that wait for a slot."""
        totals = struct.unpack_from(f"={self.workers}q", self._map, 8 * _HEADER_WORDS)
        return int(sum(totals) - totals[self.me])

    def use(self, index: int, now: float, memory_s: float) -> ShareUse:
        """Share ``index``'s use at ``now``, over every worker."""
        recent = 0.0
        running = waiting = kinds = 0
        for worker in range(self.workers):
            usage, at, started_sum, run, wait, bits = _RECORD.unpack_from(
                self._map, self._offset(index, worker)
            )
            recent += _decayed(usage, now - at, memory_s)
            if run:
                recent += max(0.0, run * now - started_sum)
            running += run
            waiting += wait
            kinds |= bits
        return ShareUse(self._name(index), recent, running, waiting, kinds)

    def all_used(self, now: float, memory_s: float) -> list[tuple[int, ShareUse]]:
        """Every claimed share's use."""
        return [(index, self.use(index, now, memory_s)) for index in range(self._claimed())]

    # -- in the supervisor --------------------------------------------------------

    def forget(self, worker: int) -> None:
        """A worker died: its jobs died with it (its recent use is kept)."""
        for index in range(self._claimed()):
            offset = self._offset(index, worker)
            usage, at, _, _, _, _ = _RECORD.unpack_from(self._map, offset)
            _RECORD.pack_into(self._map, offset, usage, at, 0.0, 0, 0, 0)
        struct.pack_into("=q", self._map, 8 * (_HEADER_WORDS + worker), 0)


def _decayed(value: float, age_s: float, memory_s: float) -> float:
    if value <= 0.0:
        return 0.0
    return value * math.exp(-max(0.0, age_s) / memory_s) if memory_s > 0 else 0.0


def _fit(name: str) -> str:
    """``name`` as an entry holds it (at most :data:`NAME_BYTES` bytes of UTF-8)."""
    raw = name.encode("utf-8")
    if len(raw) <= NAME_BYTES:
        return name
    return raw[:NAME_BYTES].decode("utf-8", "ignore")
