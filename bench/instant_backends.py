"""InstantBackendForBench: many fake distcc backends in one process, for bench/scale.py.

Each backend listens on a compile port and a status port on loopback. It reads every
request whole (with the project's own parser, so it costs what a real read costs),
then answers at once with a tiny object: only the balancer's own work is left to
measure. Its ``/status`` says how many of its slots are busy, as distlb-server's does,
and honours distlb-server's long poll (``?since=TOKEN&wait=S``, answered once the state
has changed enough: client/status.py ``changed_enough``), so a balancer's report cost is
what it is against real servers.

    .venv/bin/python -m bench.instant_backends --count 500 --slots 16

prints one JSON line, ``{"backends": [[port, status_port], ...]}``, once all listen.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

from client.status import change_token, changed_enough, compilers_revision
from wire import Reply, encode_reply
from wire.stream import read_request

HOST = "127.0.0.1"
OBJECT = b"\x7fELF" + b"\0" * 60
COMPILERS = {"gcc": {"path": "/usr/bin/gcc", "version": "gcc (fake) 12", "digest": "f" * 64}}
MAX_WAIT_S = 30.0
REVISION = compilers_revision(COMPILERS)


class InstantBackendForBench:
    def __init__(self, slots: int, hold_s: float = 0.0) -> None:
        self.slots = slots
        self.hold_s = hold_s
        """Seconds to hold each job before answering (to keep many jobs in flight)."""
        self.busy = 0
        self.version = 0
        self.changed = asyncio.Event()

    def _bump(self) -> None:
        self.version += 1
        self.changed.set()
        self.changed = asyncio.Event()

    async def compile(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.busy += 1
        self._bump()
        try:
            request = await read_request(reader, idle_timeout_s=10)
            if self.hold_s and not any("distlb-probe" in arg for arg in request.argv):
                await asyncio.sleep(self.hold_s)  # (health probes are answered at once)
            writer.write(encode_reply(Reply(request.protocol, 0, b"", b"", OBJECT)))
            await writer.drain()
        except Exception:  # a client that left: nothing to answer
            pass
        finally:
            self.busy -= 1
            self._bump()
            writer.close()

    def report(self) -> bytes:
        return json.dumps({
            "slots": self.slots, "busy": self.busy, "free": self.slots - self.busy,
            "accepting": True, "compilers": COMPILERS, "result_cache": False,
            "change": change_token(self.busy, True, REVISION),
        }).encode()  # fmt: skip

    async def status(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            while (await asyncio.wait_for(reader.readline(), 10)) not in (b"\r\n", b"\n", b""):
                pass
            target = line.split()[1].decode() if len(line.split()) > 1 else "/"
            query = dict(
                part.split("=", 1) for part in target.partition("?")[2].split("&") if "=" in part
            )
            since = query.get("since", "")
            wait = min(float(query.get("wait", 0)), MAX_WAIT_S)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait
            while since and not changed_enough(since, self.slots, self.busy, True, REVISION):
                left = deadline - loop.time()
                if left <= 0:
                    break
                waiter = asyncio.ensure_future(self.changed.wait())
                await asyncio.wait((waiter,), timeout=left)
                waiter.cancel()
            body = self.report()
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            head += b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
            writer.write(head + body)
            await writer.drain()
        except Exception:
            pass
        finally:
            writer.close()


async def main_async(count: int, slots: int, hold_s: float) -> None:
    servers = []
    ports = []
    for _ in range(count):
        backend = InstantBackendForBench(slots, hold_s)
        compile_server = await asyncio.start_server(backend.compile, HOST, 0, backlog=1024)
        status_server = await asyncio.start_server(backend.status, HOST, 0, backlog=1024)
        servers += [compile_server, status_server]
        ports.append([compile_server.sockets[0].getsockname()[1],
                      status_server.sockets[0].getsockname()[1]])  # fmt: skip
    print(json.dumps({"backends": ports}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.instant_backends", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--count", type=int, default=2)
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument("--hold-s", type=float, default=0.0, help="hold each job this long")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(main_async(args.count, args.slots, args.hold_s))
    except ImportError:
        asyncio.run(main_async(args.count, args.slots, args.hold_s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
