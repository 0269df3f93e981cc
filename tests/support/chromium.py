"""Real headless Chromium for the pages' tests."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp


def headless_flags(profile: str) -> list[str]:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed (scripts/bootstrap.sh installs it)"
    return [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}",
    ]  # fmt: skip


class LivePage:
    """A page kept open in real headless Chromium, read while it runs through the
    DevTools protocol (a websocket): for pages that change without a reload. Every
    request the page makes is recorded in :attr:`requests`."""

    def __init__(self, url: str) -> None:
        self.profile = tempfile.mkdtemp(prefix="chromium-live-")
        flags = headless_flags(self.profile)
        self.proc = subprocess.Popen(
            [*flags, "--remote-debugging-port=0", "--remote-allow-origins=*", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        self.requests: list[str] = []
        self.loop = asyncio.new_event_loop()
        self._ids = itertools.count(1)
        try:
            self.loop.run_until_complete(self._open(url))
        except BaseException:
            self.close()
            raise

    async def _open(self, url: str) -> None:
        active = Path(self.profile) / "DevToolsActivePort"
        async with asyncio.timeout(60):
            while not active.exists() or len(active.read_text().split()) < 2:
                if self.proc.poll() is not None:
                    raise AssertionError(f"chromium exited with {self.proc.returncode}")
                await asyncio.sleep(0.05)
        port = int(active.read_text().split()[0])
        self.session = aiohttp.ClientSession()
        async with self.session.put(f"http://127.0.0.1:{port}/json/new?about:blank") as reply:
            target = await reply.json()
        self.ws = await self.session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        await self._call("Network.enable")
        await self._call("Page.enable")
        await self._call("Page.navigate", url=url)

    async def _call(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        await self.ws.send_json({"id": ident, "method": method, "params": params})
        async with asyncio.timeout(30):
            while True:
                message = await self.ws.receive_json()
                if message.get("method") == "Network.requestWillBeSent":
                    self.requests.append(message["params"]["request"]["url"])
                if message.get("id") == ident:
                    if "error" in message:
                        raise AssertionError(f"{method}: {message['error']}")
                    return dict(message.get("result", {}))

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page, now."""
        result = self.loop.run_until_complete(
            self._call("Runtime.evaluate", expression=expression, returnByValue=True)
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float, what: str) -> Any:
        """Until ``expression`` is truthy in the page (checked every 0.1 s), at most
        ``timeout_s``; its value."""
        deadline = time.monotonic() + timeout_s
        error = ""
        while True:
            try:
                value = self.evaluate(expression)
            except AssertionError as exc:  # (the page is not there yet, or half drawn)
                value, error = None, str(exc)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"the page never showed {what} in {timeout_s} s {error}")
            time.sleep(0.1)

    def screenshot(self, path: Path, width: int = 1280, height: int = 1400) -> None:
        self.loop.run_until_complete(
            self._call(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
        )
        shot = self.loop.run_until_complete(self._call("Page.captureScreenshot", format="png"))
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        async def shut() -> None:
            if hasattr(self, "ws"):
                await self.ws.close()
            if hasattr(self, "session"):
                await self.session.close()

        with contextlib.suppress(Exception):
            self.loop.run_until_complete(shut())
        self.loop.close()
        # The browser and its helpers: the process group it leads (started above).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)
