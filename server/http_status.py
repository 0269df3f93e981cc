"""The status face on the stats port: distccd's text at /, JSON at /status, /metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CONTENT_TYPE_LATEST

from client.access import Network, is_allowed
from server.stats import ServerStats

log = structlog.get_logger("distlb.server.status")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def allow_only(networks: Sequence[Network]) -> Middleware:
    """A middleware that answers 403 to peers outside ``networks``: the pages name
    compilers, paths and the files being compiled."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        peer = request.remote or "?"
        if not is_allowed(peer, networks):
            log.warning("status_refused", client=peer, path=request.path[:200])
            return web.Response(status=403, text="not allowed (--status-allow)\n")
        return await handler(request)

    return middleware


def make_app(
    stats: ServerStats,
    compilers: Callable[[], dict[str, dict[str, str]]],
    version: str,
    allow: Sequence[Network],
) -> web.Application:
    async def distccd_stats(_: web.Request) -> web.Response:
        return web.Response(text=stats.distccd_text(), content_type="text/plain")

    async def status(_: web.Request) -> web.Response:
        return web.json_response(stats.status(compilers(), version))

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=stats.prometheus(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application(middlewares=[allow_only(allow)])
    app.router.add_get("/", distccd_stats)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    return app
