"""Live updates for the dashboard's viewers, as server-sent events.

One task builds each update once (every ``interval_s``, only while someone watches)
and hands the same bytes to every viewer. Each viewer has a queue of a few updates:
one that reads too slowly loses the older ones (each update is whole, so the newest
is all it needs) and is dropped when a write stalls for ``write_timeout_s``. At most
``max_viewers`` watch at once; the page falls back to polling when refused."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

log = structlog.get_logger("distlb.balancer.live")

QUEUE = 4


class Viewers:
    def __init__(
        self,
        update: Callable[[], Awaitable[dict[str, object]]],
        max_viewers: int = 64,
        interval_s: float = 1.0,
        write_timeout_s: float = 5.0,
    ) -> None:
        self._update = update
        self.max_viewers = max_viewers
        self.interval_s = interval_s
        self.write_timeout_s = write_timeout_s
        self._queues: set[asyncio.Queue[bytes]] = set()
        self._task: asyncio.Task[None] | None = None
        self.refused = 0
        self.dropped = 0

    @property
    def count(self) -> int:
        return len(self._queues)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if len(self._queues) >= self.max_viewers:
            self.refused += 1
            return web.Response(status=503, text="too many live viewers: poll /dashboard.json\n")
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=QUEUE)
        self._queues.add(queue)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._broadcast())
        try:
            # (retry: how long the browser waits before it reconnects)
            await response.write(b"retry: 2000\n\n")
            while True:
                data = await queue.get()
                if not data:
                    break  # (the balancer is stopping)
                async with asyncio.timeout(self.write_timeout_s):
                    await response.write(data)
        except TimeoutError:
            self.dropped += 1
            log.info("viewer_dropped", reason="writes stalled", peer=request.remote)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._queues.discard(queue)
        return response

    async def _broadcast(self) -> None:
        while self._queues:
            try:
                update = await self._update()
            except Exception:
                log.exception("live_update_failed")
                update = None
            if update is not None:
                data = b"event: update\ndata: " + json.dumps(update).encode() + b"\n\n"
                for queue in list(self._queues):
                    if queue.full():
                        queue.get_nowait()  # (the oldest update is stale anyway)
                    queue.put_nowait(data)
            await asyncio.sleep(self.interval_s)

    async def close(self, _app: object = None) -> None:
        """End every stream (aiohttp's on_shutdown) and the broadcast."""
        for queue in list(self._queues):
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(b"")
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
