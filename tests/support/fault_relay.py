"""FaultRelayForTests: a TCP relay that delays every chunk, a test fault injector.

It can also turn into a black hole (``mode = "blackhole"``: nothing more is passed on,
either way, and new connections are accepted and left hanging) or trickle what comes
back (``mode = "trickle"``: replies pass at one byte a second), at any moment.

This kernel has no ``netem`` qdisc and Toxiproxy cannot be installed here, so the
system tests get latency from this relay instead: it listens on an address,
connects each accepted connection to an upstream address, and forwards every chunk
it reads ``delay_s`` later, in both directions, keeping the order of the bytes. It
is pure latency (chunks are timestamped on arrival and written when their time
comes), not a throughput limit. EOF and resets are passed on after the same delay.

Run it inside a network namespace as its own process::

    ip netns exec NS python -m tests.support.fault_relay \\
        --listen 198.18.0.21:4632 --to 127.0.0.1:3632 --delay-ms 200

It prints ``relay_ready`` on stdout once every listener is bound. In a test's own
process (:class:`RelayThread`) it can also connect upstream from another loopback
address (``source``): a second client address for tests of what the balancer does per
client.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import threading
import time

CHUNK_BYTES = 64 * 1024
QUEUE_CHUNKS = 256  # per direction; the reader waits when the writer is this far behind
CONNECT_TIMEOUT_S = 5.0
TRICKLE_INTERVAL_S = 1.0


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"want HOST:PORT, got {text!r}")
    return host, int(port)


class FaultRelayForTests:
    """Forwards TCP connections from ``listen`` to ``upstream``, ``delay_s`` late each way."""

    def __init__(
        self,
        listen: tuple[str, int],
        upstream: tuple[str, int],
        delay_s: float,
        source: str | None = None,
    ):
        self.listen = listen
        self.upstream = upstream
        self.delay_s = delay_s
        self.source = source
        self.server: asyncio.Server | None = None
        self.connections = 0
        self._mode = "pass"
        self.healed = asyncio.Event()
        self.healed.set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, *self.listen, reuse_address=True)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    @property
    def mode(self) -> str:
        """pass, blackhole or trickle; read at every chunk, so it may change at any time."""
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        self._mode = value
        if value == "blackhole":
            self.healed.clear()
        else:
            self.healed.set()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.mode == "blackhole":
            await self.healed.wait()  # a connection made in a partition waits it out
        try:
            up_r, up_w = await asyncio.wait_for(
                asyncio.open_connection(
                    *self.upstream, local_addr=(self.source, 0) if self.source else None
                ),
                CONNECT_TIMEOUT_S,
            )
        except (OSError, TimeoutError):
            # Upstream refused or is gone: the downstream sees a reset, as it would directly.
            _abort(down_w)
            return
        try:
            await asyncio.gather(self._pipe(down_r, up_w), self._pipe(up_r, down_w, replies=True))
        finally:
            # Ended, or the relay shut down (a partition's relay dies, and both ends see
            # their connection go): never leave an end waiting on a socket nobody serves.
            for writer in (down_w, up_w):
                _abort(writer)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, replies: bool = False
    ) -> None:
        # None in the queue is EOF; a reset is passed on as an abort.
        queue: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue(QUEUE_CHUNKS)

        async def read() -> None:
            while True:
                try:
                    chunk = await reader.read(CHUNK_BYTES)
                except OSError:
                    chunk = b""
                await queue.put((time.monotonic() + self.delay_s, chunk or None))
                if not chunk:
                    return

        async def write() -> None:
            while True:
                due, chunk = await queue.get()
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                while self.mode == "blackhole":
                    # Hold everything while the black hole lasts (a partition: what was
                    # sent meanwhile arrives when it heals, as TCP would resend it).
                    await self.healed.wait()
                try:
                    if chunk is None:
                        if writer.can_write_eof():
                            writer.write_eof()
                        return
                    if replies and self.mode == "trickle":
                        for index in range(len(chunk)):
                            writer.write(chunk[index : index + 1])
                            await writer.drain()
                            await asyncio.sleep(TRICKLE_INTERVAL_S)
                        continue
                    writer.write(chunk)
                    await writer.drain()
                except OSError:
                    _abort(writer)
                    return

        reading = asyncio.create_task(read())
        try:
            await write()
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading


class RelayThread:
    """A FaultRelayForTests on its own event loop in a thread, for integration tests."""

    def __init__(self, upstream: tuple[str, int], source: str | None = None) -> None:
        self.relay = FaultRelayForTests(("127.0.0.1", 0), upstream, 0.0, source)
        self._loop = asyncio.new_event_loop()
        self._closing = False
        # Connections cut off by close() end noisily: nothing to report then.
        self._loop.set_exception_handler(
            lambda loop, context: None if self._closing else loop.default_exception_handler(context)
        )
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.relay.start(), self._loop).result(10)

    @property
    def port(self) -> int:
        return self.relay.port

    def set_mode(self, mode: str) -> None:
        self._loop.call_soon_threadsafe(setattr, self.relay, "mode", mode)

    def close(self) -> None:
        self._closing = True

        async def shut() -> None:
            await self.relay.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shut(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def _abort(writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    if not transport.is_closing():
        transport.abort()


async def _main(pairs: list[tuple[tuple[str, int], tuple[str, int]]], delay_s: float) -> None:
    relays = [FaultRelayForTests(listen, upstream, delay_s) for listen, upstream in pairs]
    for relay in relays:
        await relay.start()
    print("relay_ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    for relay in relays:
        await relay.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=_address, action="append", required=True)
    parser.add_argument("--to", type=_address, action="append", required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="added each direction")
    args = parser.parse_args(argv)
    if len(args.listen) != len(args.to):
        parser.error("give one --to per --listen")
    asyncio.run(_main(list(zip(args.listen, args.to, strict=True)), args.delay_ms / 1000))
    return 0


if __name__ == "__main__":
    sys.exit(main())
