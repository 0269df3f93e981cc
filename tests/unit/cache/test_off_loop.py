"""Work that grows with a job's bytes runs off the event loop (a review saw /healthz
stall 2-4 s while the balancer hashed eight 256 MiB sources on it): a big source's
digest is taken in a thread, while the loop goes on; a small one's on the loop."""

from __future__ import annotations

import asyncio
import threading

import pytest

import cache.digest
from cache import JobDigest, job_digest
from cache.digest import ON_LOOP_BYTES, digest_off_loop
from wire import Request

pytestmark = pytest.mark.asyncio


async def test_a_big_sources_digest_leaves_the_loop_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entered, release = threading.Event(), threading.Event()
    loop_thread = threading.get_ident()
    threads: list[int] = []

    def held_digest(protocol: int, argv: tuple[str, ...], source: bytes, share: bool) -> JobDigest:
        threads.append(threading.get_ident())
        entered.set()
        release.wait(30)  # (held until the loop has shown it still runs)
        return job_digest(protocol, argv, source, share)

    monkeypatch.setattr(cache.digest, "job_digest", held_digest)
    big = Request(1, ("gcc", "-c", "b.c", "-o", "b.o"), b"x" * (ON_LOOP_BYTES + 1))
    digest = asyncio.create_task(digest_off_loop(big))
    assert await asyncio.to_thread(entered.wait, 30)  # (the loop awaits it: it turns)
    ticks = 0
    for _ in range(10):
        await asyncio.sleep(0)
        ticks += 1
    assert ticks == 10 and not digest.done()
    release.set()
    assert await digest == job_digest(big.protocol, big.argv, big.source)
    assert threads and threads[0] != loop_thread


async def test_a_small_sources_digest_is_taken_on_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: list[int] = []

    def recorded(protocol: int, argv: tuple[str, ...], source: bytes, share: bool) -> JobDigest:
        threads.append(threading.get_ident())
        return job_digest(protocol, argv, source, share)

    monkeypatch.setattr(cache.digest, "job_digest", recorded)
    small = Request(1, ("gcc", "-c", "s.c", "-o", "s.o"), b"int s;\n")
    assert await digest_off_loop(small) == job_digest(small.protocol, small.argv, small.source)
    assert threads == [threading.get_ident()]
