"""docker/chaos.py against a stand-in for Toxiproxy's HTTP API and a real balancer.

Toxiproxy itself cannot be installed here (its container runs in the compose farm), so
a small HTTP server answers the API calls ``toxiproxy-python`` makes and records them;
the load and the ``/status`` reports are real.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.support.servers import StartBalancer, StartServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROXIES = ("server1", "server1-status", "server2", "server2-status", "server3",
           "server3-status")  # fmt: skip


class FakeToxiproxyAPI(BaseHTTPRequestHandler):
    calls: ClassVar[list[tuple[str, str, Any]]] = []

    def _reply(self, code: int, body: object | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.calls.append(("GET", self.path, None))
        if self.path == "/proxies":
            self._reply(200, {name: {"name": name, "listen": "0.0.0.0:1", "enabled": True,
                                     "upstream": f"{name}:3632", "toxics": []}
                              for name in PROXIES})  # fmt: skip
        else:
            self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"null")
        self.calls.append(("POST", self.path, body))
        self._reply(204 if self.path == "/reset" else 200, body)

    def log_message(self, *_: object) -> None:
        return


@pytest.fixture
def fake_toxiproxy() -> Iterator[tuple[int, list[tuple[str, str, Any]]]]:
    FakeToxiproxyAPI.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeToxiproxyAPI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], FakeToxiproxyAPI.calls
    server.shutdown()
    server.server_close()


def test_chaos_script_adds_latency_stalls_and_resets_and_reports_the_farm(
    start_server: StartServer,
    start_balancer: StartBalancer,
    fake_toxiproxy: tuple[int, list[tuple[str, str, Any]]],
) -> None:
    api_port, calls = fake_toxiproxy
    server = start_server("--jobs", "2")
    balancer = start_balancer("--backend", f"127.0.0.1:{server.port},status={server.stats_port}")
    balancer.wait_healthy(1)
    result = subprocess.run(
        [sys.executable, str(ROOT / "docker" / "chaos.py"), f"--toxiproxy=127.0.0.1:{api_port}",
         f"--balancer=127.0.0.1:{balancer.stats_port}", f"--vip=127.0.0.1:{balancer.port}",
         "--duration=5", "--jobs=40", "--concurrency=2", "--size-kb=1"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.count("phase:") == 5 and "server2 stalled" in out
    assert f"127.0.0.1:{server.port}" in out and "load through the VIP" in out
    toxics = {(path, body["type"], body["stream"]) for method, path, body in calls
              if method == "POST" and path.endswith("/toxics")}  # fmt: skip
    assert toxics == {
        ("/proxies/server1/toxics", "latency", "upstream"),
        ("/proxies/server1/toxics", "latency", "downstream"),
        ("/proxies/server2/toxics", "timeout", "downstream"),
        ("/proxies/server2-status/toxics", "timeout", "downstream"),
        ("/proxies/server3/toxics", "reset_peer", "downstream"),
    }
    assert sum(1 for method, path, _ in calls if (method, path) == ("POST", "/reset")) >= 2
