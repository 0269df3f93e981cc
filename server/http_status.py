"""The status face on the stats port: distccd's text at /, JSON at /status, /metrics,
and a dashboard at /dashboard (its data at /dashboard.json)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from client.status import (
    CHANGE_TOKEN,
    MAX_REPORT_WAIT_S,
    change_token,
    changed_enough,
    compilers_revision,
)
from daemon.access import Network
from daemon.changes import Changes
from daemon.pages import add_assets, allow_only, page
from server.stats import ServerStats

log = structlog.get_logger("distlb.server.status")
MAX_HELD_REPORTS = 256
"""Report requests held at once (long polls); more are answered at once."""


def _wait_s(text: str) -> float:
    try:
        wait = float(text)
    except ValueError:
        return 0.0
    return min(wait, MAX_REPORT_WAIT_S) if wait > 0 else 0.0  # (NaN is not > 0)


def make_app(
    stats: ServerStats,
    compilers: Callable[[], dict[str, dict[str, str]]],
    version: str,
    allow: Sequence[Network],
) -> web.Application:
    async def distccd_stats(_: web.Request) -> web.Response:
        return web.Response(text=stats.distccd_text(), content_type="text/plain")

    slots = stats.slots
    changes = Changes()
    slots.on_change = changes.notify
    held = 0  # report requests held now

    def revision() -> str:
        """The compilers' revision and the slots offered (a change of either answers a
        long poll at once: server/machine.py may offer fewer while the machine is busy)."""
        return compilers_revision(compilers()) + format(slots.offered, "x")

    async def status(request: web.Request) -> web.Response:
        """The report; ``?since=TOKEN&wait=S``: once the state has changed enough since
        the report whose ``change`` was TOKEN, or after S seconds (a long poll: a
        balancer learns of changes at once and asks rarely when there are none)."""
        nonlocal held
        since = request.query.get("since", "")
        wait_s = _wait_s(request.query.get("wait", ""))
        rev = revision()
        if wait_s and CHANGE_TOKEN.fullmatch(since) and held < MAX_HELD_REPORTS:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait_s
            held += 1
            try:
                while slots.accepting and not changed_enough(
                    since, slots.offered, slots.busy, slots.accepting, rev
                ):
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    await asyncio.wait((changes.next(),), timeout=left)
                    rev = revision()
            finally:
                held -= 1
        body = stats.status(compilers(), version)
        body["change"] = change_token(slots.busy, slots.accepting, rev)
        return web.json_response(body)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=stats.prometheus(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    dashboard = page("server", "dashboard.html")

    async def dashboard_page(_: web.Request) -> web.Response:
        return web.Response(text=dashboard, content_type="text/html")

    async def dashboard_json(request: web.Request) -> web.Response:
        try:
            since = float(request.query.get("since", "0"))
        except ValueError:
            return web.Response(status=400, text="since: a time in seconds\n")
        return web.json_response(
            {"status": stats.status(compilers(), version), **stats.activity.snapshot(since)}
        )

    app = web.Application(middlewares=[allow_only(allow, "--status-allow")])
    app.router.add_get("/", distccd_stats)
    app.router.add_get("/dashboard", dashboard_page)
    app.router.add_get("/dashboard.json", dashboard_json)
    add_assets(app)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    return app
