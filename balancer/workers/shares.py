"""What the workers of one balancer share for fair share (balancer/routing/fair.py): per
client share (a principal, an address or a named group), each worker's recent compile
time there, its jobs running and its jobs waiting for a slot.

One anonymous shared mapping made before the workers fork (with one worker: the same,
unshared). Per worker, a header: how many of its jobs wait, and the entries of the
shares it has jobs waiting for (up to :data:`LISTED`; past that, readers look at every
entry), so that who waits is found without reading every share ever seen. Then the
entries, found by hashing the share's name (linear probing; claimed under a lock on a
temp file). An entry is the share's name, then one record per worker: the worker's
recent compile seconds and when it last wrote them (the reader decays them to now), the
sum of its running jobs' start times and how many run (their time so far counts at once,
not only when they end), when the worker last asked for the entry, how many of its jobs
wait and, as bits, for which kinds of job (a kind: a compiler, pump or not, hashed to one
of 32 bits). A worker writes only its own records.

Entries are taken back: when a new share finds the table full, an entry that no worker
has asked for in a while (fair share: 4 x its memory, when the share's use has decayed
to 2 %), and that has no job running or waiting, gets its name; only if none is idle
does the new share count in the last entry, :data:`OVERFLOW`, together with others like
it (more than 4,095 clients busy within minutes of each other).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
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
IDLE_S = 3600.0
"""By default, an entry untouched this long, with nothing running or waiting, may go to a
new share (fair share passes its own: a few times its memory)."""
LISTED = 256
"""Shares with waiting jobs a worker lists in its header (more: readers scan the table)."""
_RECORD = struct.Struct("=ddddiiI4x")  # use, use_at, started_sum, touched, running, waiting, kinds
_WAITING = struct.Struct(f"=qq{LISTED}i")  # waiting jobs, listed shares, the entries
_WAITING_TOTAL = struct.Struct("=q")  # (its first field alone: asked on every pick)


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
    kinds_elsewhere: int
    """Bits of the kinds of job that wait in the other workers (:func:`kind_bit`)."""


class ShareTable:
    def __init__(self, workers: int = 1, capacity: int = CAPACITY) -> None:
        if workers < 1 or capacity < 2:
            raise ValueError("workers must be at least 1 and capacity at least 2")
        self.workers = workers
        self.capacity = capacity
        self._entry = NAME_BYTES + workers * _RECORD.size
        self._header = -(-(workers * _WAITING.size) // 8) * 8
        self._map = mmap.mmap(-1, self._header + capacity * self._entry)
        self._lock = tempfile.TemporaryFile(prefix="distlb-shares-")  # noqa: SIM115 (for life)
        self._known: dict[str, int] = {}
        self._overflowed: dict[str, float] = {}
        """Shares told to count in the overflow's entry, and when."""
        self._listed: list[int] = []
        """The entries this worker lists as having its jobs waiting."""
        self._waiting_total = 0
        self.me = 0
        with self._locked():
            self._write_name(capacity - 1, OVERFLOW)

    def become(self, worker: int) -> None:
        self.me = worker
        self._known.clear()
        total, count, *indices = _WAITING.unpack_from(self._map, worker * _WAITING.size)
        self._waiting_total, self._listed = int(total), list(indices[: min(count, LISTED)])

    # -- entries ----------------------------------------------------------------

    def _name_bytes(self, index: int) -> bytes:
        offset = self._header + index * self._entry
        return self._map[offset : offset + NAME_BYTES].rstrip(b"\0")

    def _name(self, index: int) -> str:
        return self._name_bytes(index).decode("utf-8", "replace")

    def entry(self, name: str, now: float, idle_s: float = IDLE_S) -> int:
        """The entry of share ``name`` (claimed if it is new; in a full table, one
        untouched for ``idle_s`` with no job is taken back), marked as asked for now."""
        key = _fit(name)
        index = self._known.get(key)
        overflowed = index == self.capacity - 1 and now - self._overflowed.get(key, 0.0) < 60
        if index is None or (not overflowed and self._name_bytes(index) != key.encode()):
            index = self._find(key, now, idle_s)
            if len(self._known) >= 2 * self.capacity:
                self._known.clear()
                self._overflowed.clear()
            self._known[key] = index
            if index == self.capacity - 1:  # (the table is full: look again in a minute)
                self._overflowed[key] = now
        self._touch(index, now)
        return index

    def _find(self, key: str, now: float, idle_s: float) -> int:
        encoded = key.encode()
        usable = self.capacity - 1  # (the last entry is the overflow's)
        start = int.from_bytes(hashlib.blake2b(encoded, digest_size=8).digest(), "big") % usable
        with self._locked():
            idle = None
            for step in range(usable):
                index = (start + step) % usable
                stored = self._name_bytes(index)
                if stored == encoded:
                    return index
                if not stored:
                    self._write_name(index, key)
                    return index
                if idle is None and self._idle(index, now, idle_s):
                    idle = index
            if idle is None:
                return self.capacity - 1
            # Taken back: a share not asked for in a while, with no job anywhere.
            for worker in range(self.workers):
                _RECORD.pack_into(self._map, self._offset(idle, worker), 0, 0, 0, now, 0, 0, 0)
            self._write_name(idle, key)
            return idle

    def _idle(self, index: int, now: float, idle_s: float) -> bool:
        for worker in range(self.workers):
            _, _, _, touched, running, waiting, _ = _RECORD.unpack_from(
                self._map, self._offset(index, worker)
            )
            if running or waiting or now - touched < idle_s:
                return False
        return True

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

    def _touch(self, index: int, now: float) -> None:
        record = self._mine(index)
        record[3] = now
        self._put(index, record)

    def started(self, index: int, now: float) -> None:
        """A job of this worker began to hold a slot for the share at ``now``."""
        record = self._mine(index)
        record[2] += now
        record[4] += 1
        self._put(index, record)

    def ended(self, index: int, started: float, now: float, memory_s: float) -> None:
        """That job gave its slot back: its time is added to the share's recent use."""
        usage, at, started_sum, touched, running, waiting, kinds = self._mine(index)
        usage = _decayed(float(usage), now - float(at), memory_s) + max(0.0, now - started)
        running = max(0, int(running) - 1)
        started_sum = float(started_sum) - started if running else 0.0
        self._put(index, [usage, now, started_sum, max(float(touched), now), running, waiting,
                          kinds])  # fmt: skip

    def set_waiting(self, index: int, count: int, kinds: int) -> None:
        """How many of this worker's jobs of the share wait now, and of which kinds."""
        record = self._mine(index)
        self._waiting_total += count - int(record[5])
        record[5], record[6] = count, kinds
        self._put(index, record)
        if count and index not in self._listed:
            self._listed.append(index)
        elif not count and index in self._listed:
            self._listed.remove(index)
        listed = self._listed[:LISTED]
        _WAITING.pack_into(
            self._map, self.me * _WAITING.size, self._waiting_total, len(self._listed),
            *listed, *([0] * (LISTED - len(listed))),
        )  # fmt: skip

    # -- everyone's ---------------------------------------------------------------

    def waiting_elsewhere(self) -> int:
        """Jobs of the other workers that wait for a slot."""
        if self.workers == 1:
            return 0
        return sum(
            _WAITING_TOTAL.unpack_from(self._map, worker * _WAITING.size)[0]
            for worker in range(self.workers)
            if worker != self.me
        )

    def waiting_entries(self) -> set[int]:
        """The entries with jobs waiting in any worker."""
        found = set(self._listed)
        for worker in range(self.workers):
            if worker == self.me:
                continue
            _, count, *indices = _WAITING.unpack_from(self._map, worker * _WAITING.size)
            if count > LISTED:  # (too many to list: look at them all)
                return found | {i for i in range(self.capacity) if self._waits(i)}
            found.update(indices[:count])
        return found

    def _waits(self, index: int) -> bool:
        return any(
            _RECORD.unpack_from(self._map, self._offset(index, worker))[5]
            for worker in range(self.workers)
        )

    def use(self, index: int, now: float, memory_s: float) -> ShareUse:
        """Share ``index``'s use at ``now``, over every worker."""
        recent = 0.0
        running = waiting = kinds = 0
        for worker in range(self.workers):
            usage, at, started_sum, _, run, wait, bits = _RECORD.unpack_from(
                self._map, self._offset(index, worker)
            )
            recent += _decayed(usage, now - at, memory_s)
            if run:
                recent += max(0.0, run * now - started_sum)
            running += run
            waiting += wait
            if worker != self.me:
                kinds |= bits
        return ShareUse(self._name(index), recent, running, waiting, kinds)

    def all_used(self, now: float, memory_s: float) -> list[tuple[int, ShareUse]]:
        """Every share that is in the table (a name's first byte is never 0)."""
        first, step, names = self._header, self._entry, self._map
        return [
            (index, self.use(index, now, memory_s))
            for index in range(self.capacity)
            if names[first + index * step]
        ]

    # -- in the supervisor --------------------------------------------------------

    def forget(self, worker: int) -> None:
        """A worker died: its jobs died with it (its recent use is kept)."""
        for index in range(self.capacity):
            offset = self._offset(index, worker)
            usage, at, _, touched, _, _, _ = _RECORD.unpack_from(self._map, offset)
            _RECORD.pack_into(self._map, offset, usage, at, 0.0, touched, 0, 0, 0)
        _WAITING.pack_into(self._map, worker * _WAITING.size, 0, 0, *([0] * LISTED))


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
