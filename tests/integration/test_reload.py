"""Issue 33: a reload that applies what it reads. SIGHUP makes each daemon read its
config again and apply every setting it can while it runs, all at once and, with
``--workers``, in every worker alike; a setting only a restart applies (a port) makes
the reload fail, named, with the old config kept. The server never dies of SIGHUP."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest

from client import compile_remote
from tests.support.secrets import farm_secret
from tests.support.servers import (
    ServerProcess,
    StartBalancer,
    StartServer,
    free_port,
    wait_until,
)
from wire import Limits, Request, WireError, encode_request
from wire.stream import read_reply

pytestmark = pytest.mark.integration

OUTSIDER = "127.0.0.2"  # (loopback too: the whole of 127/8 is local on Linux)
JOB = Request(1, ("gcc", "-c", "r.c", "-o", "r.o"), b"int reloaded(void) { return 3; }\n")


def _spec(server: ServerProcess) -> str:
    return f"127.0.0.1:{server.port},status={server.stats_port}"


def _compiles_from(address: str, port: int) -> bool:
    """Whether a job sent from ``address`` is compiled (False: the connection was
    closed unanswered, as a daemon does to an address it does not allow)."""

    async def send() -> bool:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))
        try:
            writer.write(encode_request(JOB))
            await writer.drain()
            reply = await asyncio.wait_for(read_reply(reader, 1, Limits()), 60)
        except (ConnectionError, WireError):
            return False
        finally:
            writer.close()
        return reply.status == 0 and reply.obj.startswith(b"\x7fELF")

    return asyncio.run(send())


def _reload(daemon: ServerProcess, config: Path, text: str, event: str) -> dict[str, Any]:
    before = len(daemon.events(event))
    config.write_text(text)
    daemon.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: len(daemon.events(event)) > before, 60, f"a {event} line")
    return daemon.events(event)[-1]


def _balancer_config(backend: str, allow: str, extra: str = "", queue_timeout: int = 10) -> str:
    return (f'backend = ["{backend}"]\nallow = ["{allow}"]\nqueue-timeout = {queue_timeout}\n'
            f'probe-timeout = 3\n{extra}')  # fmt: skip


def test_a_reload_that_narrows_allow_refuses_the_excluded_address(
    start_server: StartServer, start_balancer: StartBalancer, shared_tmp: Path
) -> None:
    server = start_server("--jobs", "2")
    config = shared_tmp / "balancer.toml"
    config.write_text(_balancer_config(_spec(server), "127.0.0.0/8"))
    balancer = start_balancer(config_file=config)
    balancer.wait_healthy(1)
    assert _compiles_from(OUTSIDER, balancer.port)

    done = _reload(balancer, config,
                   _balancer_config(_spec(server), "127.0.0.1/32", queue_timeout=5),
                   "reloaded")  # fmt: skip

    assert set(done["changed"]) == {"--allow", "--queue-timeout"}
    refused = balancer.totals()["rejected_access"]
    assert not _compiles_from(OUTSIDER, balancer.port)
    assert balancer.totals()["rejected_access"] == refused + 1
    assert _compiles_from("127.0.0.1", balancer.port)


def test_a_reload_that_changes_the_listen_port_fails_names_it_and_keeps_the_old_config(
    start_server: StartServer, start_balancer: StartBalancer, shared_tmp: Path
) -> None:
    server = start_server("--jobs", "2")
    config = shared_tmp / "balancer.toml"
    ports = f"port = {free_port()}\nadmin-port = {free_port()}\n"
    config.write_text(_balancer_config(_spec(server), "127.0.0.0/8", ports))
    balancer = start_balancer(config_file=config)
    balancer.wait_healthy(1)
    moved = ports.replace(f"port = {balancer.port}", f"port = {free_port()}", 1)

    failed = _reload(balancer, config,
                     _balancer_config(_spec(server), "127.0.0.1/32", moved),
                     "reload_failed")  # fmt: skip

    assert "--port" in str(failed["reason"]) and "restart" in str(failed["reason"])
    assert _compiles_from(OUTSIDER, balancer.port)  # (its allow list was not taken either)
    assert "distlb_config_last_reload_successful 0.0" in balancer.http("/metrics")
    assert balancer.proc.poll() is None


def test_workers_agree_after_a_reload(
    start_server: StartServer, start_balancer: StartBalancer, shared_tmp: Path
) -> None:
    """Each connection lands on one of the workers (SO_REUSEPORT spreads them by their
    source ports): every one of many must see the reloaded allow list."""
    server = start_server("--jobs", "2")
    config = shared_tmp / "balancer.toml"
    config.write_text(_balancer_config(_spec(server), "127.0.0.0/8", "workers = 2\n"))
    balancer = start_balancer(config_file=config)
    balancer.wait_healthy(1)
    reloaded = len(balancer.events("reloaded"))
    config.write_text(_balancer_config(_spec(server), "127.0.0.1/32", "workers = 2\n"))
    balancer.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: len(balancer.events("reloaded")) >= reloaded + 2, 60,
               "both workers' reloaded lines")  # fmt: skip

    assert {tuple(e["changed"]) for e in balancer.events("reloaded")[reloaded:]} == {("--allow",)}
    outcomes = [_compiles_from(OUTSIDER, balancer.port) for _ in range(16)]
    assert not any(outcomes)
    assert balancer.totals()["rejected_access"] >= 16
    assert _compiles_from("127.0.0.1", balancer.port)


def test_the_workers_supervisor_refuses_a_reload_a_start_would_refuse(
    start_server: StartServer, start_balancer: StartBalancer, shared_tmp: Path
) -> None:
    """With --workers, the supervisor reads a reload once for all: it runs the start's
    own checks too (a keytab that cannot be read), so such a config is never written
    down for a worker that starts again later (a review: a restarted worker failed on
    it, and the supervisor then stopped the balancer)."""
    server = start_server("--jobs", "2")
    config = shared_tmp / "balancer.toml"
    config.write_text(_balancer_config(_spec(server), "127.0.0.0/8", "workers = 2\n"))
    balancer = start_balancer(config_file=config)
    balancer.wait_healthy(1)
    broken = f'workers = 2\nauth = true\nkeytab = "{shared_tmp / "no-such.keytab"}"\n'
    failed = _reload(balancer, config, _balancer_config(_spec(server), "127.0.0.0/8", broken),
                     "reload_failed")  # fmt: skip
    assert "keytab" in str(failed["reason"]).lower(), failed
    assert not balancer.events("reload_read")  # (nothing written down for the workers)
    assert _compiles_from("127.0.0.1", balancer.port)


def test_a_backends_changed_options_keep_its_history(
    start_server: StartServer, start_balancer: StartBalancer, shared_tmp: Path
) -> None:
    server = start_server("--jobs", "2")
    config = shared_tmp / "balancer.toml"
    config.write_text(_balancer_config(_spec(server), "127.0.0.0/8"))
    balancer = start_balancer(config_file=config)
    balancer.wait_healthy(1)
    assert _compiles_from("127.0.0.1", balancer.port)
    name = f"127.0.0.1:{server.port}"
    before = balancer.backend(name)
    assert before["ok"] == 1

    _reload(balancer, config, _balancer_config(f"{_spec(server)},weight=3", "127.0.0.0/8"),
            "reloaded")  # fmt: skip

    after = balancer.backend(name)
    assert after["weight"] == 3
    assert (after["ok"], after["sent"]) == (before["ok"], before["sent"])  # not reset
    assert after["state"] == "up"
    assert balancer.logged("backend_updated")["options"] == ["weight"]
    assert balancer.event("backend_removed") is None


def _server_config(allow: str, extra: str = "") -> str:
    jobs = "" if "jobs" in extra else "jobs = 2\n"
    return f'allow = ["{allow}"]\n{jobs}{extra}'


def test_the_server_survives_sighup_and_applies_a_new_allow_list(
    start_server: StartServer, shared_tmp: Path
) -> None:
    config = shared_tmp / "server.toml"
    config.write_text(_server_config("127.0.0.0/8"))
    server = start_server("--config", str(config))
    assert _compiles_from(OUTSIDER, server.port)

    done = _reload(server, config, _server_config("127.0.0.1/32", "job-lifetime = 600\n"),
                   "reloaded")  # fmt: skip

    assert set(done["changed"]) == {"--allow", "--job-lifetime"}
    assert server.proc.poll() is None
    assert "distlb_config_last_reload_successful 1.0" in server.http("/metrics")
    assert not _compiles_from(OUTSIDER, server.port)
    assert server.counters()["rejected_access"] >= 1
    assert _compiles_from("127.0.0.1", server.port)


def test_a_server_reload_that_changes_its_port_fails_and_the_server_goes_on(
    start_server: StartServer, shared_tmp: Path
) -> None:
    config = shared_tmp / "server.toml"
    config.write_text(_server_config("127.0.0.0/8"))
    server = start_server("--config", str(config))

    failed = _reload(server, config, _server_config("127.0.0.1/32", "jobs = 3\n"),
                     "reload_failed")  # fmt: skip

    assert "--jobs" in str(failed["reason"])
    assert server.proc.poll() is None
    assert "distlb_config_last_reload_successful 0.0" in server.http("/metrics")
    assert _compiles_from(OUTSIDER, server.port)


def test_a_reload_with_a_compiler_that_does_not_run_in_the_sandbox_changes_nothing(
    start_server: StartServer, shared_tmp: Path
) -> None:
    """A reload runs each compiler in the sandbox again, as a start does: one that
    fails leaves the server as it was, and says why."""
    config = shared_tmp / "server.toml"
    config.write_text(_server_config("127.0.0.0/8", 'compiler = ["gcc"]\n'))
    server = start_server("--config", str(config))

    failed = _reload(server, config,
                     _server_config("127.0.0.1/32", 'compiler = ["gcc", "no-such-cc"]\n'),
                     "reload_failed")  # fmt: skip

    assert "no-such-cc" in str(failed["reason"])
    assert _compiles_from(OUTSIDER, server.port)
    assert server.status()["compilers"].keys() >= {"gcc"}


def _debug_job(home: str) -> Request:
    """A -g job preprocessed in ``home`` (gcc's working-directory marker second)."""
    text = (f'# 0 "{home}/src/a.c"\n# 0 "{home}//"\n# 0 "<built-in>"\n# 0 "<command-line>"\n'
            f'# 1 "{home}/src/a.c"\nint shared(void) {{ return 7; }}\n').encode()  # fmt: skip
    return Request(1, ("gcc", "-g", "-c", "a.c", "-o", "a.o"), text)


def test_a_server_reload_applies_cache_share_across_dirs(
    start_server: StartServer, shared_tmp: Path
) -> None:
    """Turning --cache-share-across-dirs off by a reload stops sharing debug objects
    between checkouts at once (a review's reload said it changed and kept sharing)."""
    config = shared_tmp / "server.toml"
    cache = (f'cache-dir = "{shared_tmp / "cache"}"\ncache-secret-file = "{farm_secret()}"\n'
             "cache-share-across-dirs = {}\n")  # fmt: skip
    config.write_text(_server_config("127.0.0.0/8", cache.format("true")))
    server = start_server("--config", str(config))

    def hits_after(home: str) -> int:
        reply = asyncio.run(compile_remote("127.0.0.1", server.port, _debug_job(home),
                                           timeout_s=60))  # fmt: skip
        assert reply.status == 0
        return int(server.status()["cache"]["hits"])

    assert hits_after("/home/alice/p") == 0
    wait_until(lambda: server.status()["cache"]["stored"] == 1, 30, "Alice's entry stored")
    assert hits_after("/home/carol/p") == 1  # (shared across checkouts, as configured)
    done = _reload(server, config, _server_config("127.0.0.0/8", cache.format("false")),
                   "reloaded")  # fmt: skip
    assert done["changed"] == ["--cache-share-across-dirs"]
    assert hits_after("/home/dave/p") == 1  # no more sharing: Dave's job is compiled
