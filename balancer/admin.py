"""The admin face: /healthz for keepalived, /status JSON, /metrics, and a live dashboard at /."""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from balancer.stats import BalancerStats


def make_app(stats: BalancerStats, serving: Callable[[], bool]) -> web.Application:
    dashboard = files("balancer").joinpath("dashboard.html").read_text(encoding="utf-8")

    async def healthz(_: web.Request) -> web.Response:
        # keepalived's check: healthy while we accept jobs and can send them somewhere.
        if serving() and stats.pool.healthy_count() > 0:
            return web.Response(text="ok\n")
        return web.Response(status=503, text="not serving\n")

    async def status(_: web.Request) -> web.Response:
        return web.json_response(stats.status())

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=stats.prometheus(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def index(_: web.Request) -> web.Response:
        return web.Response(text=dashboard, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    return app
