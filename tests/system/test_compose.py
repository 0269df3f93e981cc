"""Issue 6: the docker-compose farm is a valid compose file with what it promises.

No Docker engine runs here: Debian's docker-compose (v1) validates and renders the
file without one, and the keepalived config each balancer container renders is
checked with keepalived's own ``-t``.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from daemon.secret_files import CACHE_SECRET_MIN_BYTES, read_secret_file
from tests.support.servers import free_port, port_open, wait_until

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"

pytestmark = pytest.mark.system


def _compose(*args: str) -> str:
    if not shutil.which("docker-compose"):
        pytest.fail("docker-compose is missing: scripts/bootstrap.sh installs Debian's",
                    pytrace=False)  # fmt: skip
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), *args],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_compose_file_is_valid_and_holds_the_farm() -> None:
    services = set(_compose("config", "--services").split())
    assert {"lb-a", "lb-b", "server1", "server2", "server3", "server", "redis", "toxiproxy",
            "loadgen", "chaos"} <= services  # fmt: skip
    rendered = _compose("config")
    assert "ghcr.io/shopify/toxiproxy" in rendered
    assert rendered.count("NET_ADMIN") == 2, "both balancers need NET_ADMIN for the VIP"
    assert "dockerfile: docker/Dockerfile" in rendered
    assert "FROM debian:bookworm" in (ROOT / "docker" / "Dockerfile").read_text()


@pytest.mark.parametrize("node,priority", [("a", 150), ("b", 100)])
def test_balancer_containers_render_a_keepalived_config_keepalived_accepts(
    tmp_path: Path, node: str, priority: int
) -> None:
    if not shutil.which("keepalived"):
        pytest.fail("keepalived is missing: scripts/bootstrap.sh installs it", pytrace=False)
    env = dict(os.environ, NODE=node, PRIORITY=str(priority), SELF_IP="172.30.63.11",
               PEER_IP="172.30.63.12", VIP="172.30.63.100/24")  # fmt: skip
    rendered = subprocess.run(
        ["sh", str(ROOT / "docker" / "render-keepalived.sh"),
         str(ROOT / "configs" / "keepalived" / "keepalived.conf.template")],
        env=env, capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    assert "{{" not in rendered
    assert "unicast_peer" in rendered and f"priority {priority}" in rendered
    conf = tmp_path / "keepalived.conf"
    conf.write_text(rendered)
    check = subprocess.run(["keepalived", "-t", "-f", str(conf)], capture_output=True,
                           text=True, timeout=30, check=False)  # fmt: skip
    assert check.returncode == 0, check.stderr


def test_shipped_pair_configs_are_accepted_by_keepalived() -> None:
    if not shutil.which("keepalived"):
        pytest.fail("keepalived is missing: scripts/bootstrap.sh installs it", pytrace=False)
    for name in ("keepalived-a.conf", "keepalived-b.conf"):
        conf = ROOT / "configs" / "keepalived" / name
        check = subprocess.run(["keepalived", "-t", "-f", str(conf)], capture_output=True,
                               text=True, timeout=30, check=False)  # fmt: skip
        assert check.returncode == 0, f"{name}: {check.stderr}"


def _rendered() -> dict[str, Any]:
    """The compose file as docker-compose renders it, read by the YAML library
    docker-compose itself runs on (Debian's python3-yaml; the venv has none)."""
    to_json = "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"
    result = subprocess.run([_compose_python(), "-c", to_json], input=_compose("config"),
                            capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    return dict(json.loads(result.stdout))


def _compose_python() -> str:
    compose = shutil.which("docker-compose")
    assert compose is not None
    with open(compose, encoding="utf-8") as script:
        return script.readline().removeprefix("#!").split()[0]


def test_redis_is_reachable_by_the_balancers_only_and_with_a_password() -> None:
    config = _rendered()
    services = config["services"]
    on_cache = {name for name, service in services.items()
                if "cache" in (service.get("networks") or {})}  # fmt: skip
    assert on_cache == {"redis", "lb-a", "lb-b"}
    assert set(services["redis"]["networks"]) == {"cache"}
    assert config["networks"]["cache"].get("internal") is True
    for name in ("lb-a", "lb-b"):
        command = services[name]["command"]
        flags = dict(arg.removeprefix("--").split("=", 1) for arg in command if "=" in arg)
        assert flags["cache-redis"] == "redis://redis:6379/0"  # (no password in it)
        # The scalable `server` service, found by Docker's DNS (issue 31).
        assert flags["backends-from-hosts"] == "server:3632"
        mounts = {v.split(":")[0]: v.split(":")[1] for v in services[name]["volumes"]}
        assert flags["cache-secret-file"].startswith(mounts["cache-secret"] + "/")
        assert flags["cache-redis-password-file"].startswith(mounts["redis-auth"] + "/")
    # The cache secret is the balancers' alone: Redis and the servers never see it.
    holders = {
        name
        for name, service in services.items()
        if any(v.startswith("cache-secret:") for v in service.get("volumes", []))
    }
    assert holders == {"lb-a", "lb-b", "farm-secrets"}
    assert services["redis"]["command"] == ["redis-server", "/etc/redis-farm/redis.conf"]


@pytest.mark.skipif(os.geteuid() != 0, reason="the script hands redis.conf to Redis's user")
def test_the_farm_secrets_script_makes_secrets_the_daemons_and_redis_accept(
    shared_tmp: Path,
) -> None:
    cache_dir, redis_dir = shared_tmp / "cache", shared_tmp / "redis"
    cache_dir.mkdir()
    redis_dir.mkdir()

    def run_script() -> None:
        subprocess.run(["sh", str(ROOT / "docker" / "farm-secrets.sh"), str(cache_dir),
                        str(redis_dir)], env=dict(os.environ, REDIS_USER="nobody"),
                       check=True, timeout=30)  # fmt: skip

    run_script()
    secret = read_secret_file(str(cache_dir / "cache-secret"), "--cache-secret-file",
                              min_bytes=CACHE_SECRET_MIN_BYTES)  # fmt: skip
    password = read_secret_file(str(redis_dir / "password"), "--cache-redis-password-file")
    assert len(secret) == len(password) == 64 and secret != password
    conf = redis_dir / "redis.conf"
    assert conf.stat().st_mode & 0o777 == 0o400
    assert conf.stat().st_uid == pwd.getpwnam("nobody").pw_uid
    assert f"requirepass {password.decode()}\n" in conf.read_text()
    run_script()  # again: the secrets are kept
    assert (cache_dir / "cache-secret").read_bytes() == secret

    # Redis itself reads the config (as the user it is given to) and wants the password.
    port = free_port()
    redis_server = subprocess.Popen(
        ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
         "redis-server", str(conf), "--port", str(port), "--bind", "127.0.0.1",
         "--dir", str(shared_tmp)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:

        def answer(auth: bytes | None) -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                if auth is not None:
                    sock.sendall(b"AUTH " + auth + b"\r\n")
                    assert sock.recv(64).startswith(b"+OK")
                sock.sendall(b"SET planted evil\r\n")
                return sock.recv(64)

        wait_until(lambda: port_open(port) or redis_server.poll() is not None, 20, "redis")
        assert redis_server.poll() is None, "redis-server refused the config"
        assert answer(None).startswith(b"-NOAUTH")
        assert answer(password) == b"+OK\r\n"
    finally:
        redis_server.kill()
        redis_server.wait()
