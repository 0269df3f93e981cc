"""A job's digests without holding the event loop: a big source is scanned and hashed in
a thread (its line markers found, its text hashed; a few milliseconds a megabyte, and
hashlib lets go of the GIL on big buffers)."""

from __future__ import annotations

import asyncio

from cache.keys import JobDigest, job_digest
from wire import Request

ON_LOOP_BYTES = 64 * 1024
"""Sources up to this size are digested on the loop (a thread's round trip costs more
than a fraction of a millisecond of scanning)."""


async def digest_off_loop(request: Request, share_across_dirs: bool = False) -> JobDigest:
    """:func:`cache.keys.job_digest` of ``request``, off the loop when it is big."""
    args = (request.protocol, request.argv, request.source, share_across_dirs)
    if len(request.source) <= ON_LOOP_BYTES:
        return job_digest(*args)
    return await asyncio.to_thread(job_digest, *args)
