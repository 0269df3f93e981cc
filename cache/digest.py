"""A job's digest without holding the event loop: a big source is hashed in a thread
(sha256 of 256 MiB takes a few hundred milliseconds, and hashlib lets go of the GIL on
big buffers)."""

from __future__ import annotations

import asyncio

from cache.keys import job_digest
from wire import Request

ON_LOOP_BYTES = 256 * 1024
"""Sources up to this size are hashed on the loop (a thread's round trip costs more)."""


async def digest_off_loop(request: Request) -> bytes:
    """:func:`cache.keys.job_digest` of ``request``, off the loop when it is big."""
    if len(request.source) <= ON_LOOP_BYTES:
        return job_digest(request.protocol, request.argv, request.source)
    return await asyncio.to_thread(job_digest, request.protocol, request.argv, request.source)
