"""Secrets a daemon reads from files once, at start: the result cache's secret
(``--cache-secret-file``, both daemons) and the balancer's Redis password
(``--cache-redis-password-file``). A bad file stops the daemon (and fails
``--check-config``) with the reason.

A secret file must be a regular file that no other user can read or write, as ssh
wants of a private key: owned by this process's user or by root, with no permission
for others, and none for its group. One exception, for systemd's ``LoadCredential=``
(docs/operations.md): it hands a service's user a root-owned 0400 file with an ACL
entry that lets that user read it, and ``stat`` then shows the ACL's mask in the
group bits. Such a file passes when its ACL lets no one read or write it but its
owner and this process's user.
"""

from __future__ import annotations

import argparse
import errno
import os
import stat
import struct
from dataclasses import dataclass

from daemon.config import ConfigError

MAX_SECRET_FILE_BYTES = 4096
CACHE_SECRET_MIN_BYTES = 32
"""As :data:`cache.entry.MIN_SECRET_BYTES` (daemon/ does not import cache/)."""
_WHITESPACE = b" \t\r\n"

# Linux's POSIX ACL xattr ("system.posix_acl_access"): a version word, then entries of
# (tag u16, permissions u16, id u32), little-endian (linux/posix_acl_xattr.h).
_ACL_XATTR = "system.posix_acl_access"
_ACL_VERSION = 2
_ACL_HEADER = struct.Struct("<I")
_ACL_ENTRY = struct.Struct("<HHI")
_ACL_USER, _ACL_GROUP_OBJ, _ACL_GROUP, _ACL_MASK = 0x02, 0x04, 0x08, 0x10
_READ_OR_WRITE = 0o6


def acl_exposure(acl: bytes, euid: int) -> str | None:
    """Whom an access ACL lets read or write the file besides its owner and ``euid``
    (None: no one). An ACL it cannot parse exposes the file (it is not trusted)."""
    if len(acl) < _ACL_HEADER.size or (len(acl) - _ACL_HEADER.size) % _ACL_ENTRY.size:
        return "an ACL this daemon cannot read"
    if _ACL_HEADER.unpack_from(acl)[0] != _ACL_VERSION:
        return "an ACL of an unknown version"
    entries = [
        _ACL_ENTRY.unpack_from(acl, offset)
        for offset in range(_ACL_HEADER.size, len(acl), _ACL_ENTRY.size)
    ]
    mask = next((perm for tag, perm, _ in entries if tag == _ACL_MASK), 0o7)
    for tag, perm, who in entries:
        if not perm & mask & _READ_OR_WRITE:
            continue
        if tag == _ACL_USER and who != euid:
            return f"its ACL lets uid {who} read or write it"
        if tag == _ACL_GROUP_OBJ:
            return "its ACL lets its group read or write it"
        if tag == _ACL_GROUP:
            return f"its ACL lets gid {who} read or write it"
    return None


def exposure(st: os.stat_result, acl: bytes | None, euid: int) -> str | None:
    """Why a file with status ``st`` (and access ACL ``acl``, None: none) is not a
    secret for a process of ``euid``; None when only its owner (this user or root) and
    this user may read it."""
    mode = stat.S_IMODE(st.st_mode)
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_uid not in (euid, 0):
        return f"owned by uid {st.st_uid}, another user (make it this user's or root's)"
    if mode & 0o006:
        return f"others may read or change it (mode {mode:04o}: chmod 600 it)"
    if acl is not None:
        return acl_exposure(acl, euid)
    if mode & 0o060:
        return (
            f"its group may read or change it (mode {mode:04o}: chmod 600 it, or hand it "
            "over with systemd's LoadCredential=, docs/operations.md)"
        )
    return None


def _access_acl(fd: int) -> bytes | None:
    try:
        return os.getxattr(fd, _ACL_XATTR)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return None  # no ACL (or none possible): the mode says it all
        raise


def read_secret_file(path: str, flag: str, *, min_bytes: int = 1) -> bytes:
    """The secret in ``path``: its bytes without trailing whitespace (a final newline).
    Raises :class:`ConfigError` naming ``flag`` when the file cannot be read, is not
    private (:func:`exposure`), is empty, holds fewer than ``min_bytes`` bytes, or more
    than :data:`MAX_SECRET_FILE_BYTES`."""
    try:
        # O_NONBLOCK: a FIFO put in its place must not hang the start (it is refused).
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot read it: {exc.strerror}") from exc
    try:
        reason = exposure(os.fstat(fd), _access_acl(fd), os.geteuid())
        if reason is not None:
            raise ConfigError(f"{flag} {path}: not a secret: {reason}")
        data = os.read(fd, MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot read it: {exc.strerror}") from exc
    finally:
        os.close(fd)
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise ConfigError(f"{flag} {path}: longer than {MAX_SECRET_FILE_BYTES} bytes")
    secret = data.rstrip(_WHITESPACE)
    if not secret:
        raise ConfigError(f"{flag} {path}: the file is empty")
    if len(secret) < min_bytes:
        raise ConfigError(
            f"{flag} {path}: {len(secret)} bytes, at least {min_bytes} are needed "
            "(make one with: openssl rand -hex 32 > FILE)"
        )
    return secret


@dataclass
class CacheSecretConfig:
    cache_secret_file: str | None = None
    """The result cache's secret (docs/cache.md); required with a cache others can
    reach (the balancer's Redis, the server's cache directory)."""

    def cache_secret(self, cache_flag: str, cache_on: bool) -> bytes | None:
        """The secret, read and checked; None when no file is named and no cache needs
        one. Raises :class:`ConfigError` when ``cache_on`` (``cache_flag`` is given) and
        there is no secret file, or when the file is not fit to be a secret."""
        if self.cache_secret_file is None:
            if cache_on:
                raise ConfigError(
                    f"{cache_flag} needs --cache-secret-file FILE: entries are authenticated "
                    "with a secret only the daemons hold, so that whoever can write to the "
                    "cache cannot plant objects (make one with: openssl rand -hex 32 > FILE; "
                    "docs/cache.md)"
                )
            return None
        return read_secret_file(
            self.cache_secret_file, "--cache-secret-file", min_bytes=CACHE_SECRET_MIN_BYTES
        )


def add_cache_secret_flag(parser: argparse.ArgumentParser, needed_with: str) -> None:
    parser.add_argument(
        "--cache-secret-file",
        metavar="FILE",
        help="the result cache's secret: its entries carry a MAC made with it, and an "
        f"entry that does not verify is a miss; needed with {needed_with}. At least "
        f"{CACHE_SECRET_MIN_BYTES} bytes, readable by this user only (default: none)",
    )
