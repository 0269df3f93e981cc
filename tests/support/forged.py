"""Entries as someone without the cache secret can make them."""

from __future__ import annotations

import hashlib
import struct

from cache import CachedResult


def old_format_entry(result: CachedResult) -> bytes:
    """An entry as distlb wrote them before entries were authenticated: ``DLBC1``, then a
    plain sha256 of the payload (which anyone can compute), then the payload."""
    payload = (struct.pack(">III", len(result.stderr), len(result.stdout), len(result.obj))
               + result.stderr + result.stdout + result.obj)  # fmt: skip
    return b"DLBC1\n" + hashlib.sha256(payload).digest() + payload
