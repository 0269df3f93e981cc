"""LZO1X-1 as distcc uses it: raw streams, no header, no stored length.

The binding is python-lzo (the reference liblzo2; decompression uses
``lzo1x_decompress_safe``, so hostile input fails cleanly). As distcc does,
we do not know the decompressed size in advance: we grow the output buffer
by doubling, never past the caller's limit.
"""

from __future__ import annotations

import re

import lzo as _lzo

from wire.errors import CompressionError, LimitExceeded

_OVERRUN_CODE = re.compile(r"(?<![0-9])-5(?![0-9])")  # LZO_E_OUTPUT_OVERRUN
_FIRST_GUESS_FACTOR = 8
_MIN_BUFFER = 64 * 1024


def compress(data: bytes) -> bytes:
    """Compress ``data`` (non-empty) with LZO1X-1, as distcc's client and server do."""
    return bytes(_lzo.compress(data, 1, False))


def decompress(data: bytes, max_size: int, field: str = "body") -> bytes:
    """Decompress a raw LZO1X stream into at most ``max_size`` bytes.

    Raises :class:`CompressionError` for a corrupt stream and
    :class:`LimitExceeded` when the output would pass ``max_size``.
    """
    size = min(max_size, max(_MIN_BUFFER, len(data) * _FIRST_GUESS_FACTOR))
    while True:
        try:
            return bytes(_lzo.decompress(data, False, size))
        except _lzo.error as exc:
            if not _is_overrun(exc):
                raise CompressionError(f"{field}: LZO data is corrupt ({exc})") from exc
            if size >= max_size:
                raise LimitExceeded(f"{field} (decompressed)", size + 1, max_size) from exc
            size = min(max_size, size * 2)


def decompress_within(data: bytes, size: int, field: str = "body") -> bytes | None:
    """Decompress ``data`` into one buffer of ``size`` bytes; None when the output would
    not fit (the work stops there). Raises :class:`CompressionError` for a corrupt
    stream."""
    try:
        return bytes(_lzo.decompress(data, False, size))
    except _lzo.error as exc:
        if _is_overrun(exc):
            return None
        raise CompressionError(f"{field}: LZO data is corrupt ({exc})") from exc


def _is_overrun(exc: Exception) -> bool:
    # python-lzo reports liblzo's error code only in the message text.
    return _OVERRUN_CODE.search(str(exc)) is not None
