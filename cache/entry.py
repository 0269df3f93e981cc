"""A cached result's bytes: magic, a checksum over the rest, then the payload (pure).

A flipped byte anywhere fails the checksum, and the entry is treated as a miss.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field

MAGIC = b"DLBC1\n"
_HEADER = struct.Struct(">III")  # stderr, stdout, object lengths
_DIGEST = 32


class CorruptEntry(Exception):
    """An entry that fails its checksum or its framing."""


@dataclass(frozen=True, slots=True)
class CachedResult:
    """A successful compile: the object and what the compiler printed (warnings replay)."""

    obj: bytes = field(repr=False)
    stderr: bytes = field(repr=False, default=b"")
    stdout: bytes = field(repr=False, default=b"")


def encode_entry(result: CachedResult) -> bytes:
    payload = (
        _HEADER.pack(len(result.stderr), len(result.stdout), len(result.obj))
        + result.stderr
        + result.stdout
        + result.obj
    )
    return MAGIC + hashlib.sha256(payload).digest() + payload


def decode_entry(data: bytes) -> CachedResult:
    """The result in ``data``; raises :class:`CorruptEntry`."""
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + _DIGEST + _HEADER.size:
        raise CorruptEntry("bad magic or short entry")
    digest = data[len(MAGIC) : len(MAGIC) + _DIGEST]
    payload = memoryview(data)[len(MAGIC) + _DIGEST :]
    if hashlib.sha256(payload).digest() != digest:
        raise CorruptEntry("checksum mismatch")
    n_err, n_out, n_obj = _HEADER.unpack_from(payload)
    body = bytes(payload[_HEADER.size :])
    if len(body) != n_err + n_out + n_obj:
        raise CorruptEntry("lengths do not add up")
    return CachedResult(
        obj=body[n_err + n_out :], stderr=body[:n_err], stdout=body[n_err : n_err + n_out]
    )
