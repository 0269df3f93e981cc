"""The admin face: /healthz for keepalived, /status JSON, /metrics, and the dashboard:
the page at /, its live updates at /events (server-sent events), the same update at
/dashboard.json for polling, and the last hour at /history.json."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from collections.abc import Callable, Sequence

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from balancer.observe.activity import merge_snapshots
from balancer.observe.history import merge_exports
from balancer.observe.live import Viewers
from balancer.observe.stats import BalancerStats
from balancer.workers.merge import merge_metrics, merge_status
from balancer.workers.supervisor import PEER_TIMEOUT_S
from daemon.access import Network
from daemon.pages import add_assets, allow_only, page

RECENT_S = 12.0
"""Each live update carries the samples of this many seconds back."""


def make_app(
    stats: BalancerStats,
    serving: Callable[[], bool],
    peers: list[str] | None = None,
    max_viewers: int = 64,
    allow: Sequence[Network] | None = None,
) -> web.Application:
    """``peers``: the admin sockets of the other workers (``--workers``), whose /status
    and /metrics are merged into this one's. ``allow``: who may read it (all but
    /healthz, keepalived's check); None on a worker's own socket."""
    dashboard = page("balancer.observe", "dashboard.html")
    peers = peers or []

    async def healthz(_: web.Request) -> web.Response:
        # keepalived's check: healthy while we accept jobs and can send them somewhere.
        if serving() and stats.pool.healthy_count() > 0:
            return web.Response(text="ok\n")
        return web.Response(status=503, text="not serving\n")

    async def status(_: web.Request) -> web.Response:
        return web.json_response(await merged_status())

    async def metrics(_: web.Request) -> web.Response:
        body = stats.prometheus()
        if peers:
            answers = await asyncio.gather(*(_ask(peer, "/metrics") for peer in peers))
            texts = [answer for answer in answers if answer is not None]
            body = merge_metrics(body.decode(), texts).encode()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def index(_: web.Request) -> web.Response:
        return web.Response(text=dashboard, content_type="text/html")

    async def merged_status() -> dict[str, object]:
        mine = stats.status()
        if not peers:
            return mine
        answers = await asyncio.gather(*(_ask(peer, "/status") for peer in peers))
        return merge_status(mine, [json.loads(a) if a is not None else None for a in answers])

    async def update() -> dict[str, object]:
        """What a viewer gets every second: the status and what is happening."""
        activity = stats.activity.snapshot()
        if peers:
            answers = await asyncio.gather(*(_ask(peer, "/activity.json") for peer in peers))
            others = [json.loads(a) if a is not None else None for a in answers]
            activity = merge_snapshots([activity, *others])
        # The last few samples: a viewer adds those newer than what it has.
        recent = await history(time.time() - RECENT_S, None)
        return {"status": await merged_status(), "activity": activity, "recent": recent,
                "viewers": viewers.count}  # fmt: skip

    async def history(since: float, backend: str | None) -> dict[str, object] | None:
        mine = stats.activity.history.export(since, backend)
        if not peers:
            return mine
        query = f"/history.json?local=1&since={since}"
        if backend is not None:
            query += "&backend=" + urllib.parse.quote(backend, safe="")
        answers = await asyncio.gather(*(_ask(peer, query) for peer in peers))
        return merge_exports([mine, *(json.loads(a) if a is not None else None for a in answers)])

    async def dashboard_json(_: web.Request) -> web.Response:
        return web.json_response(await update())

    async def activity_json(_: web.Request) -> web.Response:
        return web.json_response(stats.activity.snapshot())

    async def history_json(request: web.Request) -> web.Response:
        try:
            since = float(request.query.get("since", "0"))
        except ValueError:
            return web.Response(status=400, text="since: a time in seconds\n")
        backend = request.query.get("backend") or None
        if request.query.get("local"):
            return web.json_response(stats.activity.history.export(since, backend))
        return web.json_response(await history(since, backend))

    viewers = Viewers(update, max_viewers=max_viewers)
    middlewares = [allow_only(allow, "--admin-allow", {"/healthz"})] if allow is not None else []
    app = web.Application(middlewares=middlewares)
    app.on_shutdown.append(viewers.close)
    stats.viewers = lambda: viewers.count
    app.router.add_get("/", index)
    add_assets(app)
    app.router.add_get("/events", viewers.handle)
    app.router.add_get("/dashboard.json", dashboard_json)
    app.router.add_get("/activity.json", activity_json)
    app.router.add_get("/history.json", history_json)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    return app


async def _ask(peer: str, path: str) -> str | None:
    """Another worker's answer at ``path`` on its admin socket, or None (it did not
    answer in time: a worker being restarted)."""
    try:
        async with (
            aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=peer),
                timeout=aiohttp.ClientTimeout(total=PEER_TIMEOUT_S),
            ) as session,
            session.get(f"http://worker{path}") as response,
        ):
            if response.status != 200:
                return None
            return await response.text()
    except (aiohttp.ClientError, TimeoutError, OSError):
        return None
