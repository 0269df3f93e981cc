"""A real redis-server on loopback, started and stopped by the tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile

from tests.support.servers import free_port, wait_until


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith((b"+PONG", b"-NOAUTH"))  # (up, with a password)
    except OSError:
        return False


class RedisServer:
    """``password``: the default user's (requirepass); None: none, as Redis ships."""

    def __init__(self, password: str | None = None) -> None:
        self.password = password
        if shutil.which("redis-server") is None:
            raise AssertionError(
                "Debian's redis-server is needed (scripts/bootstrap.sh installs it)"
            )
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="distlb-redis-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--maxmemory", "256mb", "--maxmemory-policy", "allkeys-lru",
             "--dir", self.dir, "--daemonize", "no", "--protected-mode", "yes",
             *(["--requirepass", self.password] if self.password else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(lambda: _pong(self.port), 20, "redis-server")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
