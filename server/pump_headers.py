"""The fingerprint of a pump compiler's system headers: what balancers route pump jobs by
and key their results with (``compilers.NAME.pump_headers`` in the server's report).

A pump job reads the server's own system headers (the client sends only its project's
files), so the farm's servers must have the same ones, and a cached pump object is one
of these headers as much as of the client's files. The fingerprint is over every file
under the compiler's system include directories by path and **content** (a sha256 of
each file; a link by its target: a sealed pump job's sandbox holds these directories
and the toolchain only, so a link out of them names nothing there): servers with the
same packages agree, whatever their files' times, and a header edited in place differs
even when its size and time are kept.

Reading 140 MB of headers costs half a second of CPU, so each file's digest is
remembered by its ``stat`` (device, inode, size, modification and change time in
nanoseconds), as ccache's inode cache does: a file whose stat is unchanged is not read
again, at a reload or the next start (the memo is a file in the server user's cache
directory: ``$CACHE_DIRECTORY`` under systemd, else ``$XDG_CACHE_HOME`` or
``~/.cache``, ``distlb-server/header-digests.json``; owned by the server's user and
written by no one else, or not used). The change time cannot be set by a program, and
a digest is remembered only for a file last changed more than two seconds before it
was read (one written again within the file system's time step would keep its stat).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import stat
import tempfile
import time
from collections.abc import Mapping, Sequence

import structlog

log = structlog.get_logger("distlb.server")

SETTLED_NS = 2_000_000_000
"""A file changed this recently is hashed but its digest not remembered."""
MEMO_VERSION = 1
MAX_MEMO_BYTES = 64 * 1024 * 1024
"""A memo file larger than this is not read (a few MB for a distribution's headers)."""


def memo_path() -> str | None:
    """Where the digests are remembered between runs, or None (no home)."""
    base = os.environ.get("CACHE_DIRECTORY", "").split(":")[0] or os.environ.get(
        "XDG_CACHE_HOME", ""
    )
    if not base:
        home = os.path.expanduser("~")
        if home == "~" or not home.startswith("/"):
            return None
        base = os.path.join(home, ".cache")
    return os.path.join(base, "distlb-server", "header-digests.json")


StatKey = tuple[int, int, int, int, int]


def _stat_key(info: os.stat_result) -> StatKey:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


class DigestMemo:
    """Content digests of files by path, valid while a file's stat is as it was."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.known: dict[str, tuple[StatKey, str]] = {}
        self.changed = False
        self.hashed = 0
        """Files read (not found in the memo) since the last :meth:`save`."""
        self.used: set[str] = set()
        """Files asked for since the last :meth:`save` (others are kept while they exist:
        another server of the user may read other directories)."""

    def load(self) -> DigestMemo:
        if self.path is None:
            return self
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return self
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if (
                info.st_uid != os.geteuid()
                or info.st_mode & 0o022
                or not stat.S_ISREG(info.st_mode)
                or info.st_size > MAX_MEMO_BYTES
            ):
                log.warning("header_memo_ignored", path=self.path,
                            reason="not a file of the server's user only")  # fmt: skip
                return self
            try:
                data = json.loads(f.read())
                if data.get("version") != MEMO_VERSION:
                    return self
                self.known = {
                    str(path): (tuple(int(n) for n in key), str(digest))  # type: ignore[misc]
                    for path, (key, digest) in data["files"].items()
                    if len(key) == 5 and len(digest) == 64
                }
            except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
                log.warning("header_memo_ignored", path=self.path, reason="unreadable")
        return self

    def digest(self, path: str, info: os.stat_result) -> str:
        """The sha256 of the regular file ``path`` whose lstat is ``info`` ("?" if it
        cannot be read)."""
        key = _stat_key(info)
        self.used.add(path)
        found = self.known.get(path)
        if found is not None and found[0] == key:
            return found[1]
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return "?"
        with os.fdopen(fd, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
            after = _stat_key(os.fstat(f.fileno()))
        self.hashed += 1
        if after == key and time.time_ns() - info.st_ctime_ns > SETTLED_NS:
            self.known[path] = (key, digest)
            self.changed = True
        return digest

    def save(self) -> None:
        """Write the memo if it changed (atomically; failures only logged)."""
        self.hashed = 0
        gone = [p for p in self.known if p not in self.used and not os.path.lexists(p)]
        for path in gone:  # (removed since: the memo does not grow with every upgrade)
            del self.known[path]
        self.used.clear()
        if self.path is None or not (self.changed or gone):
            return
        directory = os.path.dirname(self.path)
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=directory, prefix=".header-digests.")
            files = {path: [list(key), digest] for path, (key, digest) in self.known.items()}
            with os.fdopen(fd, "w") as f:
                json.dump({"version": MEMO_VERSION, "files": files}, f)
            os.replace(temporary, self.path)
            self.changed = False
        except OSError as exc:
            with contextlib.suppress(OSError, UnboundLocalError):
                os.unlink(temporary)
            log.warning("header_memo_not_saved", path=self.path, reason=str(exc))


_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_IN_CHANGES = (
    0x002 | 0x004 | 0x008 | 0x040 | 0x080 | 0x100 | 0x200 | 0x400 | 0x800
)  # MODIFY ATTRIB CLOSE_WRITE MOVED_FROM MOVED_TO CREATE DELETE DELETE_SELF MOVE_SELF
_IN_ONLYDIR_DONT_FOLLOW = 0x01000000 | 0x02000000
_libc = ctypes.CDLL(None, use_errno=True)


class HeadersWatch:
    """Tells whether anything under the directories it watches has changed since it
    began (inotify: the kernel queues the event in the changing call itself, so a job
    that asks after its compile knows whether its headers changed before or while it
    ran). :attr:`ok` is False when a directory could not be watched (the fingerprint
    is then not reported: no balancer keys a cached object with it)."""

    def __init__(self) -> None:
        self.fd = _libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        self.ok = self.fd >= 0
        self.seen = False
        self.reason = "" if self.ok else os.strerror(ctypes.get_errno())

    def add(self, directory: str) -> None:
        if not self.ok:
            return
        mask = _IN_CHANGES | _IN_ONLYDIR_DONT_FOLLOW
        if _libc.inotify_add_watch(self.fd, os.fsencode(directory), mask) < 0:
            error = ctypes.get_errno()
            if error != errno.ENOENT:  # (gone since it was listed: its parent says so)
                self.ok, self.reason = False, f"{directory}: {os.strerror(error)}"

    def changed(self) -> bool:
        """Whether anything watched changed since it began (never, for a watch that
        could not be set: its fingerprint is "", which keys nothing)."""
        if not self.ok:
            return False
        if self.seen:
            return True
        try:
            while os.read(self.fd, 65536):
                self.seen = True
        except BlockingIOError:
            pass
        except OSError:
            self.seen = True
        return self.seen

    def __del__(self) -> None:  # (once no server context holds it: jobs may still ask)
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd, self.ok = -1, False


def headers_of(
    info: Mapping[str, Mapping[str, str]], memo: DigestMemo
) -> tuple[dict[str, str], HeadersWatch]:
    """Per pump compiler (server/pump.py ``mark_pump``), the fingerprint of its system
    headers ("" when they cannot be watched for changes), and the watch that says when
    they change. Reads every header's stat, and the contents of those ``memo`` does not
    know (blocking: call it off the loop)."""
    walked: dict[str, bytes] = {}
    watch = HeadersWatch()
    dirs = {name: entry["pump"].split("\n") for name, entry in info.items() if "pump" in entry}
    found = {name: headers_fingerprint(d, memo, walked, watch) for name, d in dirs.items()}
    if memo.hashed:
        log.info("pump_headers_read", files=memo.hashed, memo=memo.path or "")
    memo.save()
    if dirs and not watch.ok:
        log.warning("pump_headers_unwatched", reason=watch.reason,
                    effect="no fingerprint reported: pump results are not cached")  # fmt: skip
        found = dict.fromkeys(found, "")
    return found, watch


def headers_fingerprint(
    dirs: Sequence[str],
    memo: DigestMemo,
    walked: dict[str, bytes] | None = None,
    watch: HeadersWatch | None = None,
) -> str:
    """A digest of every file under ``dirs`` by path and content, and of every link by
    its target. ``walked``: each directory's digest, kept between calls (compilers
    share directories); ``watch``: told of each directory before it is read."""
    walked = {} if walked is None else walked
    total = hashlib.sha256(b"distlb-pump-headers-v2\0")
    outer = [d for d in sorted(set(dirs)) if not any(d.startswith(o + "/") for o in dirs)]
    for top in outer:  # (a directory inside another is read with it)
        if top not in walked:
            walked[top] = _walk_digest(top, memo, watch)
        total.update(top.encode("utf-8", "surrogateescape") + b"\0" + walked[top])
    return total.hexdigest()[:32]


def _walk_digest(top: str, memo: DigestMemo, watch: HeadersWatch | None) -> bytes:
    found = hashlib.sha256()
    stack = [top]
    while stack:
        directory = stack.pop()
        if watch is not None:
            watch.add(directory)  # (before it is read: a change after is an event)
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
                said = "?"
                if stat.S_ISDIR(info.st_mode):
                    stack.append(entry.path)
                    said = "D"
                elif stat.S_ISREG(info.st_mode):
                    said = f"F{memo.digest(entry.path, info)}"
                elif stat.S_ISLNK(info.st_mode):
                    # (by its target: one out of the directories names nothing in a sealed
                    # pump job's sandbox, which holds only these and the toolchain)
                    said = f"L{os.readlink(entry.path)}"
            except OSError:
                said = "?"
            found.update(f"{entry.path}\0{said}\n".encode("utf-8", "surrogateescape"))
    return found.digest()
