"""A cached result's bytes (pure): authenticated with a secret only the daemons hold.

    MAGIC (6) | MAC (32) | CRC-32 of the payload (4) | payload
    payload = lengths of stderr, stdout, object (3 x 4) | stderr | stdout | object
    MAC     = HMAC-SHA256(secret, "distlb-cache-entry-v2" NUL len(key) key CRC payload)

Whoever can write to a store (Redis, a cache directory) can put bytes under any key,
but without the secret cannot make a MAC that verifies: an entry made elsewhere is
rejected (:class:`RejectedEntry`), and so is a good entry moved under another job's
key (the key is in the MAC). The CRC only tells damage (a flipped byte:
:class:`CorruptEntry`) from an entry made without the secret; both are misses. An
entry of another format (the old ``DLBC1``, a plain sha256 anyone could compute) is
rejected too.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import zlib
from dataclasses import dataclass, field

MAGIC = b"DLBC2\n"
OLD_MAGIC = b"DLBC1\n"
MIN_SECRET_BYTES = 32
"""A cache secret shorter than this is refused (HMAC-SHA256 keys up to 64 bytes are
used as they are)."""
_CONTEXT = b"distlb-cache-entry-v2\0"
_HEADER = struct.Struct(">III")  # stderr, stdout, object lengths
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


def check_secret(secret: bytes) -> None:
    """Raises ``ValueError`` for a secret too short to key the entries' MAC."""
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"a cache secret needs at least {MIN_SECRET_BYTES} bytes")


def _mac(secret: bytes, key: str, body: memoryview | bytes) -> bytes:
    mac = hmac.new(secret, _CONTEXT, hashlib.sha256)
    encoded = key.encode()
    mac.update(len(encoded).to_bytes(4, "big") + encoded)
    mac.update(body)
    return mac.digest()


def encode_entry(key: str, result: CachedResult, secret: bytes) -> bytes:
    """The bytes to store ``result`` under ``key``, authenticated with ``secret``."""
    payload = (
        _HEADER.pack(len(result.stderr), len(result.stdout), len(result.obj))
        + result.stderr
        + result.stdout
        + result.obj
    )
    body = _CRC.pack(zlib.crc32(payload)) + payload
    return MAGIC + _mac(secret, key, body) + body


def decode_entry(key: str, data: bytes, secret: bytes) -> CachedResult:
    """The result stored in ``data`` under ``key``. Raises :class:`CorruptEntry` for
    damage, :class:`RejectedEntry` for an entry this secret did not make for this key."""
    if data.startswith(OLD_MAGIC):
        raise RejectedEntry("an entry of the old format (a plain checksum, no MAC)")
    if not data.startswith(MAGIC) or len(data) < _FIXED:
        raise CorruptEntry("bad magic or short entry")
    view = memoryview(data)
    mac = view[len(MAGIC) : len(MAGIC) + _MAC_BYTES]
    body = view[len(MAGIC) + _MAC_BYTES :]
    (crc,) = _CRC.unpack_from(body)
    payload = body[_CRC.size :]
    if zlib.crc32(payload) != crc:
        raise CorruptEntry("checksum mismatch")
    if not hmac.compare_digest(_mac(secret, key, body), mac):
        raise RejectedEntry("its MAC does not verify: not made with this cache's secret")
    n_err, n_out, n_obj = _HEADER.unpack_from(payload)
    rest = bytes(payload[_HEADER.size :])
    if len(rest) != n_err + n_out + n_obj:
        raise CorruptEntry("lengths do not add up")
    return CachedResult(
        obj=rest[n_err + n_out :], stderr=rest[:n_err], stdout=rest[n_err : n_err + n_out]
    )
