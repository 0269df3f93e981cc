"""The object a compile left: read without trusting the job's files."""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NoObject:
    """Why a compile that succeeded has no object to send."""

    reason: str
    limit: str | None = "output"
    """"output" when the job's output broke a rule (too big, not a regular file)."""


def read_output(job_dir: str, name: str, max_bytes: int) -> bytes | NoObject:
    """The object the compiler left in ``job_dir``, or why there is none to send.

    The job's files are not trusted: the name is opened from the directory's own file
    descriptor without following a symlink and without blocking on a FIFO, and only a
    regular file with one name, within ``max_bytes``, is read. Blocking: run it in a
    thread."""
    dir_fd = os.open(job_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        try:
            fd = os.open(
                name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=dir_fd
            )
        except FileNotFoundError:
            return NoObject("the compiler succeeded but wrote no output file", None)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return NoObject("the output is a symbolic link, not a regular file: not sent")
            raise
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
