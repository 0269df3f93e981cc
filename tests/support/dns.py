"""Debian's real dnsmasq on loopback, answering for a test domain only, whose records a
test changes by starting it again (and whose absence is a DNS failure)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence

from tests.support.servers import free_port


class Dnsmasq:
    """dnsmasq on 127.0.0.1:``port`` for ``domain`` alone, records as its flags say."""

    def __init__(self, domain: str, ttl_s: int = 1) -> None:
        assert shutil.which("dnsmasq"), "Debian's dnsmasq is needed (scripts/bootstrap.sh)"
        self.domain = domain
        self.ttl_s = ttl_s
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def server(self) -> str:
        """As ``--dns-server`` takes it."""
        return f"127.0.0.1:{self.port}"

    def start(self, records: Sequence[str]) -> None:
        """Serve ``records`` (``--host-record=...``, ``--srv-host=...``) from now on."""
        self.stop()
        self.proc = subprocess.Popen(
            ["dnsmasq", "--keep-in-foreground", f"--port={self.port}",
             "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
             "--conf-file=/dev/null", "--pid-file=", f"--local=/{self.domain}/",
             f"--local-ttl={self.ttl_s}", "--log-facility=/dev/null", *records],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self) -> None:
        """Gone: queries time out (a DNS failure)."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
            self.proc.wait(10)
            self.proc = None
