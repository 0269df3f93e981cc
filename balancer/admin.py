"""The admin face: /healthz for keepalived, /status JSON, /metrics, and a live dashboard at /."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from importlib.resources import files

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from balancer.stats import BalancerStats
from balancer.workers import PEER_TIMEOUT_S, merge_metrics, merge_status


def make_app(
    stats: BalancerStats, serving: Callable[[], bool], peers: list[str] | None = None
) -> web.Application:
    """``peers``: the admin sockets of the other workers (``--workers``), whose /status
    and /metrics are merged into this one's."""
    dashboard = files("balancer").joinpath("dashboard.html").read_text(encoding="utf-8")
    peers = peers or []

    async def healthz(_: web.Request) -> web.Response:
        # keepalived's check: healthy while we accept jobs and can send them somewhere.
        if serving() and stats.pool.healthy_count() > 0:
            return web.Response(text="ok\n")
        return web.Response(status=503, text="not serving\n")

    async def status(_: web.Request) -> web.Response:
        if not peers:
            return web.json_response(stats.status())
        mine = stats.status()
        answers = await asyncio.gather(*(_ask(peer, "/status") for peer in peers))
        others = [json.loads(answer) if answer is not None else None for answer in answers]
        return web.json_response(merge_status(mine, others))

    async def metrics(_: web.Request) -> web.Response:
        body = stats.prometheus()
        if peers:
            answers = await asyncio.gather(*(_ask(peer, "/metrics") for peer in peers))
            texts = [answer for answer in answers if answer is not None]
            body = merge_metrics(body.decode(), texts).encode()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def index(_: web.Request) -> web.Response:
        return web.Response(text=dashboard, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", index)
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
