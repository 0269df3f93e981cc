"""The status face on the stats port: distccd's text at /, JSON at /status, /metrics."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from server.stats import ServerStats


def make_app(
    stats: ServerStats, compilers: Callable[[], dict[str, dict[str, str]]], version: str
) -> web.Application:
    async def distccd_stats(_: web.Request) -> web.Response:
        return web.Response(text=stats.distccd_text(), content_type="text/plain")

    async def status(_: web.Request) -> web.Response:
        return web.json_response(stats.status(compilers(), version))

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=stats.prometheus(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/", distccd_stats)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    return app
