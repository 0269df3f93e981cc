"""What both daemons' dashboards share: the chart script and the style sheet, served
from the package beside the page (a farm may have no internet: nothing is fetched
from anywhere else)."""

from __future__ import annotations

from importlib.resources import files

from aiohttp import web

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
