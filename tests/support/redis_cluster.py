"""A real Redis Cluster and a real Sentinel group on loopback, started and stopped by the
tests: ``redis-server --cluster-enabled yes`` nodes joined by ``redis-cli --cluster
create``, and ``redis-server --sentinel`` watching a master and its replica. Every
process is ours and stopped by its pid; data dirs are temp dirs, removed at the end."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import redis

from tests.support.cache_builds import entry_keys
from tests.support.redis import _pong
from tests.support.servers import free_port, wait_until

CLUSTER_NODE_TIMEOUT_MS = 1000
"""Small, so that a killed master is failed over within seconds."""


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        raise AssertionError(
            f"Debian's {tool} is needed (scripts/bootstrap.sh installs redis-server)"
        )


class _Processes:
    def __init__(self, prefix: str) -> None:
        _need("redis-server")
        _need("redis-cli")
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def _start(self, port: int, args: list[str]) -> None:
        self.procs[port] = subprocess.Popen(
            ["redis-server", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until(lambda: _pong(port) or self.procs[port].poll() is not None, 20, f"redis {port}")
        if self.procs[port].poll() is not None:
            raise AssertionError(f"redis-server on {port} exited {self.procs[port].returncode}")

    def _data_args(self, port: int) -> list[str]:
        data = self.dir / str(port)
        data.mkdir()
        return ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru",
                # (a new replica is served at once, not after the default 5 s)
                "--repl-diskless-sync-delay", "0",
                "--dir", str(data), "--daemonize", "no", "--protected-mode", "yes"]  # fmt: skip

    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port`` (ours, by its pid)."""
        proc = self.procs[port]
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        for port in list(self.procs):
            self.kill(port)
        shutil.rmtree(self.dir, ignore_errors=True)


def _client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2)


class RedisClusterNodes(_Processes):
    """``masters`` masters with ``replicas`` replicas each."""

    def __init__(self, masters: int = 3, replicas: int = 0) -> None:
        super().__init__("distlb-redis-cluster-")
        self.ports = [free_port() for _ in range(masters * (1 + replicas))]
        try:
            for port in self.ports:
                self._start(port, [
                    *self._data_args(port), "--cluster-enabled", "yes",
                    "--cluster-config-file", str(self.dir / f"nodes-{port}.conf"),
                    # (the default bus port, PORT+10000, may be taken or past 65535)
                    "--cluster-port", str(free_port()),
                    "--cluster-node-timeout", str(CLUSTER_NODE_TIMEOUT_MS),
                    # A cache: the live masters' slots keep serving while one is down.
                    "--cluster-require-full-coverage", "no",
                ])  # fmt: skip
            created = subprocess.run(
                ["timeout", "60", "redis-cli", "--cluster", "create",
                 *(f"127.0.0.1:{port}" for port in self.ports),
                 "--cluster-replicas", str(replicas), "--cluster-yes"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if created.returncode != 0:
                raise AssertionError(f"--cluster create: {created.stdout}{created.stderr}")
            wait_until(self._formed, 30, "the cluster formed (every slot served, replicas in sync)")
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports[:2])

    def live_ports(self) -> list[int]:
        return [port for port in self.ports if self.procs[port].poll() is None]

    def nodes(self) -> list[dict[str, str]]:
        """CLUSTER NODES as one live node sees it: port, flags (master/slave, fail),
        its master's id, and whether it serves slots."""
        table = _client(self.live_ports()[0]).cluster("NODES")
        return [
            {"port": address.rsplit(":", 1)[1], "id": node["node_id"], "flags": node["flags"],
             "master": node["master_id"], "slots": "yes" if node["slots"] else ""}
            for address, node in table.items()
        ]  # fmt: skip

    def masters(self) -> list[int]:
        """Ports of the live masters that serve slots."""
        return [int(r["port"]) for r in self.nodes()
                if "master" in r["flags"] and "fail" not in r["flags"] and r["slots"]]  # fmt: skip

    def ok(self) -> bool:
        """Every live node says cluster_state:ok and every slot is served by a live master."""
        for port in self.live_ports():
            info = _client(port).cluster("INFO")
            if info.get("cluster_state") != "ok" or int(info.get("cluster_slots_ok", 0)) != 16384:
                return False
        return True

    def _formed(self) -> bool:
        if not self.ok():
            return False
        rows = self.nodes()
        if len(rows) != len(self.ports):
            return False
        for row in rows:
            if "slave" in row["flags"]:
                info = _client(int(row["port"])).info("replication")
                if info.get("master_link_status") != "up":
                    return False
        return True

    def in_sync(self) -> bool:
        """Every replica has what its master has (so a failover loses no entry)."""
        for row in self.nodes():
            if "slave" in row["flags"] and "fail" not in row["flags"]:
                replica = _client(int(row["port"])).info("replication")
                master = _client(int(replica["master_port"])).info("replication")
                if replica.get("slave_repl_offset") != master.get("master_repl_offset"):
                    return False
        return True

    def keys(self) -> int:
        """The entries held by the masters (the markers beside them apart)."""
        return sum(len(entry_keys(_client(port))) for port in self.masters())


MASTER_NAME = "distlb"


class SentinelGroup(_Processes):
    """A master, one replica of it, and three sentinels watching them."""

    def __init__(self, down_after_ms: int = 1000) -> None:
        super().__init__("distlb-redis-sentinel-")
        self.master_port, self.replica_port = free_port(), free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        try:
            self._start(self.master_port, self._data_args(self.master_port))
            replica_of = ["--replicaof", "127.0.0.1", str(self.master_port)]
            self._start(self.replica_port, [*self._data_args(self.replica_port), *replica_of])
            for port in self.sentinel_ports:
                conf = self.dir / f"sentinel-{port}.conf"
                conf.write_text(
                    f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                    f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master_port} 2\n"
                    f"sentinel down-after-milliseconds {MASTER_NAME} {down_after_ms}\n"
                    f"sentinel failover-timeout {MASTER_NAME} 10000\n"
                    f"sentinel parallel-syncs {MASTER_NAME} 1\n"
                )
                self._start(port, [str(conf), "--sentinel"])
            wait_until(self._watching, 30, "three sentinels that know the master, its replica "
                       "and each other")  # fmt: skip
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        ports = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{ports}/{MASTER_NAME}"

    def _watching(self) -> bool:
        for port in self.sentinel_ports:
            state = _client(port).sentinel_master(MASTER_NAME)
            assert isinstance(state, dict), state  # one sentinel's own reply, not a bool
            if int(state["num-other-sentinels"]) != 2 or int(state["num-slaves"]) != 1:
                return False
        replica = _client(self.replica_port).info("replication")
        return bool(replica.get("master_link_status") == "up")

    def master(self) -> int:
        """The master's port, as every live sentinel names it (0 while they disagree)."""
        named = {_named_master(port) for port in self.sentinel_ports
                 if self.procs[port].poll() is None}  # fmt: skip
        return named.pop() if len(named) == 1 else 0

    def in_sync(self) -> bool:
        replica = _client(self.replica_port).info("replication")
        master = _client(self.master_port).info("replication")
        return bool(replica.get("slave_repl_offset") == master.get("master_repl_offset"))

    def keys(self, port: int) -> int:
        return int(_client(port).dbsize())


def _named_master(sentinel_port: int) -> int:
    """The master's port, as the sentinel on ``sentinel_port`` names it."""
    address = _client(sentinel_port).sentinel_get_master_addr_by_name(MASTER_NAME)
    assert isinstance(address, tuple), address  # one sentinel's own reply, not a bool
    return int(address[1])
