"""A cancelled task stops, whatever it was waiting on when the cancel came.

Python 3.11's ``asyncio.wait_for`` loses a cancel that arrives while the awaited
operation completes (the operation's result or error comes out instead). Our code used
it around connects and drains: a job whose client had left went on retrying, and a
balancer's SIGTERM could hang for good in ``Pool.stop()`` when a probe met a refused
connect at that moment. These tests cancel at every point of the first loop turns
against a port that refuses, so the cancel meets the failing connect."""

from __future__ import annotations

import asyncio
import socket

import pytest

from balancer.pool.pool import Pool
from balancer.routing.backend import BackendSpec
from balancer.settings import PoolSettings
from client import ClientError, compile_remote
from client.prober import probe_request

pytestmark = pytest.mark.asyncio

TURNS = 12
"""Loop turns before the cancel: a refused connect completes within the first few."""


def _refusing_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens on it once closed


async def test_a_cancelled_compile_stops_even_as_its_connect_fails() -> None:
    port = _refusing_port()
    lost = []
    for turns in range(TURNS):
        for _ in range(10):
            task = asyncio.ensure_future(
                compile_remote("127.0.0.1", port, probe_request("gcc"), connect_timeout_s=5)
            )
            for _ in range(turns):
                await asyncio.sleep(0)
            if task.done():  # it failed before the cancel: nothing to lose
                assert isinstance(task.exception(), ClientError)
                continue
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                continue
            except ClientError as exc:
                lost.append((turns, repr(exc)))
    assert lost == [], f"cancels lost (the task went on and failed instead): {lost[:3]}"


async def test_the_pool_stops_while_its_probes_meet_refused_connects() -> None:
    port = _refusing_port()
    specs = [BackendSpec.parse(f"127.0.0.1:{port},status={port}") for _ in range(1)]
    settings = PoolSettings(probe_interval_s=0.0, poll_interval_s=0.0, fast_poll_interval_s=0.0)
    for turns in range(TURNS * 4):
        pool = Pool(specs, settings)
        pool.start()
        for _ in range(turns):
            await asyncio.sleep(0)
        stopping = asyncio.ensure_future(pool.stop())
        done, _ = await asyncio.wait([stopping], timeout=30)
        assert done, f"Pool.stop() did not end after {turns} loop turns"
