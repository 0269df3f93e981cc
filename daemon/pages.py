"""What both daemons' HTTP faces share: the dashboards' chart script and style sheet,
served from the package beside the page (a farm may have no internet: nothing is
fetched from anywhere else), and the allowlist of who may read them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from importlib.resources import files

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from daemon.access import Network, is_allowed

log = structlog.get_logger("distlb.pages")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ASSETS = {"charts.js": "text/javascript", "dashboard.css": "text/css"}


def add_assets(app: web.Application) -> None:
    """GET /charts.js and /dashboard.css on ``app``."""
    for name, content_type in ASSETS.items():
        body = files("daemon").joinpath(name).read_text(encoding="utf-8")

        async def asset(_: web.Request, body: str = body, kind: str = content_type) -> web.Response:
            return web.Response(text=body, content_type=kind)

        app.router.add_get("/" + name, asset)


def page(package: str, name: str) -> str:
    """A page's HTML from ``package``'s data."""
    return files(package).joinpath(name).read_text(encoding="utf-8")


def allow_only(
    networks: Sequence[Network], flag: str, open_paths: Collection[str] = ()
) -> Middleware:
    """A middleware that answers 403 to peers outside ``networks`` (set by ``flag``),
    except on ``open_paths``: the pages name compilers, paths, the files being compiled
    and who compiles them."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        peer = request.remote or "?"
        if request.path not in open_paths and not is_allowed(peer, networks):
            log.warning("status_refused", client=peer, path=request.path[:200])
            return web.Response(status=403, text=f"not allowed ({flag})\n")
        return await handler(request)

    return middleware
