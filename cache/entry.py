"""A cached result's bytes (pure): authenticated with a secret only the daemons hold.

    MAGIC (6) | MAC (32) | CRC-32 of the payload (4) | payload
    payload = lengths of stderr, stdout, object, paths (4 x 4) | stderr | stdout | object
              | paths
    paths   = count (4) | each: length (4) | path
    MAC     = HMAC-SHA256(secret, "distlb-cache-entry-v3" NUL len(key) key CRC payload)

A pump job's entry (cache/pump_key.py) carries its dependency file too:

    PUMP_MAGIC (6) | MAC | CRC | payload as above, then the dependency file's length
    (4) and bytes; its MAC's context is "distlb-pump-entry-v1" (so neither kind is taken
    for the other; balancers that know only the first never look a pump key up).

The paths are the line-marker paths of the job that stored the entry, kept when its key
left them out and its stderr is not empty: a hit's warnings are rewritten with them to
name the requester's files (cache/stderr_paths.py).

Whoever can write to a store (Redis, a cache directory) can put bytes under any key,
but without the secret cannot make a MAC that verifies: an entry made elsewhere is
rejected (:class:`RejectedEntry`), and so is a good entry moved under another job's
key (the key is in the MAC). The CRC only tells damage (a flipped byte:
:class:`CorruptEntry`) from an entry made without the secret; both are misses. An
entry of another format (the old ``DLBC1``, a plain sha256 anyone could compute, or
``DLBC2``, without paths) is rejected too.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import zlib
from dataclasses import dataclass, field

MAGIC = b"DLBC3\n"
PUMP_MAGIC = b"DLBP1\n"
OLD_MAGICS = (b"DLBC1\n", b"DLBC2\n")
MIN_SECRET_BYTES = 32
"""A cache secret shorter than this is refused (HMAC-SHA256 keys up to 64 bytes are
used as they are)."""
_CONTEXT = b"distlb-cache-entry-v3\0"
_PUMP_CONTEXT = b"distlb-pump-entry-v1\0"
_HEADER = struct.Struct(">IIII")  # stderr, stdout, object, paths lengths
_COUNT = struct.Struct(">I")
_CRC = struct.Struct(">I")
_MAC_BYTES = 32
_FIXED = len(MAGIC) + _MAC_BYTES + _CRC.size + _HEADER.size


class BadEntry(Exception):
    """An entry that must not be served (a miss); the message says why."""


class CorruptEntry(BadEntry):
    """An entry damaged in the store: its checksum or its framing fails."""


class RejectedEntry(BadEntry):
    """An intact entry not made with this cache's secret for this key: forged, moved
    from another key, written with another secret, or of another format."""


@dataclass(frozen=True, slots=True)
class CachedResult:
    """A successful compile: the object and what the compiler printed (warnings replay)."""

    obj: bytes = field(repr=False)
    stderr: bytes = field(repr=False, default=b"")
    stdout: bytes = field(repr=False, default=b"")
    paths: tuple[bytes, ...] = field(repr=False, default=())
    """The storing job's line-marker paths, when its stderr needs them to be rewritten."""
    deps: bytes | None = field(repr=False, default=None)
    """A pump job's dependency file (None: a job of protocol 1 or 2)."""


def check_secret(secret: bytes) -> None:
    """Raises ``ValueError`` for a secret too short to key the entries' MAC."""
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"a cache secret needs at least {MIN_SECRET_BYTES} bytes")


def _mac(secret: bytes, key: str, body: memoryview | bytes, pump: bool = False) -> bytes:
    mac = hmac.new(secret, _PUMP_CONTEXT if pump else _CONTEXT, hashlib.sha256)
    encoded = key.encode()
    mac.update(len(encoded).to_bytes(4, "big") + encoded)
    mac.update(body)
    return mac.digest()


def encode_entry(key: str, result: CachedResult, secret: bytes) -> bytes:
    """The bytes to store ``result`` under ``key``, authenticated with ``secret``."""
    paths = _encode_paths(result.paths)
    payload = b"".join((
        _HEADER.pack(len(result.stderr), len(result.stdout), len(result.obj), len(paths)),
        result.stderr, result.stdout, result.obj, paths,
    ))  # fmt: skip
    pump = result.deps is not None
    if result.deps is not None:
        payload += _COUNT.pack(len(result.deps)) + result.deps
    body = _CRC.pack(zlib.crc32(payload)) + payload
    return (PUMP_MAGIC if pump else MAGIC) + _mac(secret, key, body, pump) + body


def decode_entry(key: str, data: bytes, secret: bytes) -> CachedResult:
    """The result stored in ``data`` under ``key``. Raises :class:`CorruptEntry` for
    damage, :class:`RejectedEntry` for an entry this secret did not make for this key."""
    if data.startswith(OLD_MAGICS):
        raise RejectedEntry(f"an entry of an old format ({data[:5].decode()})")
    pump = data.startswith(PUMP_MAGIC)
    if not (pump or data.startswith(MAGIC)) or len(data) < _FIXED + (_COUNT.size if pump else 0):
        raise CorruptEntry("bad magic or short entry")
    view = memoryview(data)
    mac = view[len(MAGIC) : len(MAGIC) + _MAC_BYTES]
    body = view[len(MAGIC) + _MAC_BYTES :]
    (crc,) = _CRC.unpack_from(body)
    payload = body[_CRC.size :]
    if zlib.crc32(payload) != crc:
        raise CorruptEntry("checksum mismatch")
    if not hmac.compare_digest(_mac(secret, key, body, pump), mac):
        raise RejectedEntry("its MAC does not verify: not made with this cache's secret")
    n_err, n_out, n_obj, n_paths = _HEADER.unpack_from(payload)
    rest = bytes(payload[_HEADER.size :])
    paths_end = n_err + n_out + n_obj + n_paths
    deps = None
    if pump:
        if len(rest) < paths_end + _COUNT.size:
            raise CorruptEntry("lengths do not add up")
        (n_deps,) = _COUNT.unpack_from(rest, paths_end)
        deps = rest[paths_end + _COUNT.size :]
        if len(deps) != n_deps:
            raise CorruptEntry("lengths do not add up")
        rest = rest[:paths_end]
    if len(rest) != paths_end:
        raise CorruptEntry("lengths do not add up")
    obj_end = n_err + n_out + n_obj
    return CachedResult(
        obj=rest[n_err + n_out : obj_end],
        stderr=rest[:n_err],
        stdout=rest[n_err : n_err + n_out],
        paths=_decode_paths(rest[obj_end:]),
        deps=deps,
    )


def _encode_paths(paths: tuple[bytes, ...]) -> bytes:
    if not paths:
        return b""
    return _COUNT.pack(len(paths)) + b"".join(_COUNT.pack(len(p)) + p for p in paths)


def _decode_paths(data: bytes) -> tuple[bytes, ...]:
    """(A MAC that verifies made these bytes: a bad framing is damage or a bug.)"""
    if not data:
        return ()
    (count,) = _COUNT.unpack_from(data)
    paths, position = [], _COUNT.size
    for _ in range(count):
        if position + _COUNT.size > len(data):
            raise CorruptEntry("paths cut short")
        (size,) = _COUNT.unpack_from(data, position)
        position += _COUNT.size
        paths.append(data[position : position + size])
        position += size
    if position != len(data):
        raise CorruptEntry("paths do not add up")
    return tuple(paths)
