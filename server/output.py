"""What a compile leaves: its object, read without trusting the job's files, and its
directory, removed the same way."""

from __future__ import annotations

import errno
import os
import stat
import threading
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger("distlb.server.output")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class NoObject:
    """Why a compile that succeeded has no object to send."""

    reason: str
    limit: str | None = "output"
    """"output" when the job's output broke a rule (too big, not a regular file)."""


def read_output(job_dir: str, name: str, max_bytes: int) -> bytes | NoObject:
    """The object the compiler left in ``job_dir``, or why there is none to send.

    The job's files are not trusted: the name (which may go down directories: ``a/b.o``)
    is opened from the directory's own file descriptor, each directory on the way
    without following a symlink, the file itself neither following one nor blocking on
    a FIFO, and only a regular file with one name, within ``max_bytes``, is read.
    Blocking: run it in a thread."""
    dir_fd = os.open(job_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        *directories, last = name.split("/")
        for directory in directories:
            try:
                down = os.open(directory, _DIR_FLAGS, dir_fd=dir_fd)
            except OSError as exc:
                return NoObject(f"the output's directory cannot be opened ({exc.strerror})")
            os.close(dir_fd)
            dir_fd = down
        try:
            fd = os.open(
                last, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=dir_fd
            )
        except FileNotFoundError:
            return NoObject("the compiler succeeded but wrote no output file", None)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return NoObject("the output is a symbolic link, not a regular file: not sent")
            if exc.errno == errno.ENXIO:  # (what opening a Unix socket gives)
                return NoObject("the output is a socket, not a regular file: not sent")
            return NoObject(f"the output cannot be opened ({exc.strerror}): not sent")
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return NoObject("the output is not a regular file: not sent")
            if info.st_nlink != 1:
                return NoObject("the output has other names (hard links): not sent")
            if info.st_size > max_bytes:
                return NoObject(f"object of {info.st_size} bytes exceeds the limit of {max_bytes}")
            chunks = []
            left = max_bytes + 1
            while left > 0:
                chunk = os.read(fd, min(left, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
            data = b"".join(chunks)
            if len(data) > max_bytes:
                return NoObject(f"object exceeds the limit of {max_bytes} bytes")
            return data
        finally:
            os.close(fd)
    finally:
        os.close(dir_fd)


@dataclass
class _Level:
    """A directory on the way down: its name in its parent, its identity (device,
    inode) and the subdirectories in it still to be removed."""

    name: str
    identity: tuple[int, int]
    subdirectories: list[str] = field(default_factory=list)


def remove_tree(path: str) -> None:
    """Remove the directory ``path`` and everything in it, without trusting what is in
    it: the walk goes by file descriptor and never follows a symbolic link (a planted
    one is removed, not followed); it keeps a list rather than recursing, so a job that
    nests directories thousands deep is removed like any other (Python's
    ``shutil.rmtree`` recursed once per level: RecursionError past about a thousand);
    it holds two descriptors at most. A directory the server may not list or change (a
    job's ``chmod 0``) is given its owner's rights back first. Blocking: run it in a
    thread. Raises ``OSError``."""
    try:
        fd = os.open(path, _DIR_FLAGS)
    except PermissionError:
        os.chmod(path, 0o700)  # (a job's own directory: the job cannot replace it)
        fd = os.open(path, _DIR_FLAGS)
    try:
        stack = [_Level("", _identity(fd), _clear(fd))]
        while True:
            level = stack[-1]
            if level.subdirectories:
                name = level.subdirectories.pop()
                child = _open_dir(name, fd)
                os.close(fd)
                fd = child
                stack.append(_Level(name, _identity(fd), _clear(fd)))
                continue
            if len(stack) == 1:
                break
            stack.pop()
            parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = parent
            if _identity(fd) != stack[-1].identity:
                raise OSError(errno.ESTALE, "a directory was moved while it was removed", path)
            os.rmdir(level.name, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(path)


def _identity(fd: int) -> tuple[int, int]:
    info = os.fstat(fd)
    return info.st_dev, info.st_ino


def _open_dir(name: str, parent: int) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except PermissionError:
        # (seen as a directory, not a link, and nothing of the job runs any more)
        os.chmod(name, 0o700, dir_fd=parent)
        return os.open(name, _DIR_FLAGS, dir_fd=parent)


def _clear(fd: int) -> list[str]:
    """Unlink everything in the directory ``fd`` but its subdirectories; their names."""
    try:
        return _unlink_all_but_directories(fd)
    except PermissionError:
        os.fchmod(fd, 0o700)
        return _unlink_all_but_directories(fd)


def _unlink_all_but_directories(fd: int) -> list[str]:
    with os.scandir(fd) as listing:
        entries = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in listing]
    for name, is_dir in entries:
        if not is_dir:
            os.unlink(name, dir_fd=fd)
    return [name for name, is_dir in entries if is_dir]


@dataclass
class JobDirs:
    """Removes job directories, and counts those it could not remove for /status (the
    reason is logged, as ``job_dir_left``). A job's uid is given back either way: the
    next job of that uid sees only its own directory."""

    left: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def snapshot(self) -> dict[str, int]:
        return {"left": self.left}

    def remove(self, job_dir: str) -> bool:
        """Remove ``job_dir`` (:func:`remove_tree`); False, logged, when it could not be.
        Blocking: run it in a thread for a directory a job used."""
        try:
            remove_tree(job_dir)
        except FileNotFoundError:
            return True
        except OSError as exc:
            log.error("job_dir_left", path=job_dir, reason=str(exc))
            with self._lock:  # (called from threads)
                self.left += 1
            return False
        return True
