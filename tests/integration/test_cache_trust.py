"""Issue 26: the cache, trustworthy. With a real Redis behind the balancer and a real
cache directory on a server, the real distcc client and real gcc:

- an entry planted under a victim's key by someone who can write to the store (in the
  old format, a plain sha256 anyone can compute, or with a MAC made without the farm's
  secret) is a miss: the victim gets the object its source makes, and the rejection
  is counted and logged;
- the same text compiled as C++ (``.ii``) and then as C (``.i``) are two jobs: the C
  client gets the C object.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from cache import CachedResult, encode_entry
from tests.support.cache_builds import entry_keys, is_entry_key, spec
from tests.support.distcc import run_distcc
from tests.support.forged import old_format_entry
from tests.support.redis import RedisServer
from tests.support.secrets import farm_secret, write_secret
from tests.support.servers import ServerProcess, StartBalancer, StartServer, wait_until

pytestmark = pytest.mark.integration

CFLAGS = ["-O2"]
MAIN = '#include <stdio.h>\nint answer(void);\nint main(void) { printf("%d\\n", answer()); }\n'
BOTH_LANGUAGES = b"# 0 \"value.src\"\nint answer_value = sizeof('a');\n"
"""Valid C and C++, with one symbol name in both (a variable's name is not mangled):
4 in C, 1 in C++. With a line marker, as preprocessed sources have, so that the object
names the same file wherever it is compiled."""
VALUE_MAIN = "extern int answer_value;\nint main(void) { return answer_value; }\n"


@dataclass
class CacheUnderTest:
    """One cache as the tests see it: where clients send jobs, its entries, its counts."""

    hosts: str
    keys: Callable[[], list[str]]
    plant: Callable[[str, bytes], None]
    status: Callable[[], dict[str, Any]]
    events: Callable[[str], list[dict[str, Any]]]
    metrics: Callable[[], str] = lambda: ""
    rejected_metric: str = ""
    """The Prometheus line that counts rejected entries, without its value."""

    def wait_entries(self, count: int) -> list[str]:
        def stored() -> list[str] | None:
            keys = self.keys()
            return keys if len(keys) >= count else None

        return list(wait_until(stored, 20, f"{count} entries stored"))


def _balancer_with_redis(
    start_server: StartServer, start_balancer: StartBalancer, redis_server: RedisServer
) -> CacheUnderTest:
    server = start_server("--jobs", "2")
    balancer = start_balancer(
        "--backend", spec(server), "--cache-redis", redis_server.url, "--cache-timeout", "2",
        "--cache-secret-file", str(farm_secret()),
    )  # fmt: skip
    balancer.wait_healthy(1)
    client = redis.Redis.from_url(redis_server.url, decode_responses=False)

    def keys() -> list[str]:
        return sorted(k.decode() if isinstance(k, bytes) else k for k in entry_keys(client))

    def plant(key: str, value: bytes) -> None:
        assert client.set(key, value)

    return CacheUnderTest(
        hosts=f"127.0.0.1:{balancer.port}/2,lzo",
        keys=keys,
        plant=plant,
        status=lambda: dict(balancer.status()["cache"]),
        events=balancer.events,
        metrics=lambda: balancer.http("/metrics"),
        rejected_metric="distlb_cache_rejected_total",
    )


def _server_with_cache_dir(start_server: StartServer, directory: Path) -> CacheUnderTest:
    server: ServerProcess = start_server("--jobs", "2", "--cache-dir", str(directory),
                                         "--cache-secret-file", str(farm_secret()))  # fmt: skip

    def keys() -> list[str]:
        return sorted(p.name for p in directory.rglob("*") if p.is_file()
                      and not p.name.startswith(".tmp-") and is_entry_key(p.name))  # fmt: skip

    def plant(key: str, value: bytes) -> None:
        (directory / key[:2] / key).write_bytes(value)

    return CacheUnderTest(
        hosts=f"127.0.0.1:{server.port}/2,lzo",
        keys=keys,
        plant=plant,
        status=lambda: dict(server.status()["cache"]),
        events=server.events,
        metrics=lambda: server.http("/metrics"),
        rejected_metric="distlb_server_cache_rejected_total",
    )


@pytest.fixture(params=["balancer-redis", "server-cache-dir"])
def cache(
    request: pytest.FixtureRequest,
    start_server: StartServer,
    start_balancer: StartBalancer,
    shared_tmp: Path,
) -> Iterator[CacheUnderTest]:
    if request.param == "server-cache-dir":
        yield _server_with_cache_dir(start_server, shared_tmp / "server-cache")
        return
    redis_server = RedisServer()
    try:
        yield _balancer_with_redis(start_server, start_balancer, redis_server)
    finally:
        redis_server.stop()


def _gcc(args: list[str], cwd: Path) -> None:
    result = subprocess.run(["gcc", *args], cwd=cwd, capture_output=True, text=True,
                            timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr


def _remote(cache: CacheUnderTest, args: list[str], cwd: Path) -> None:
    """Compile through the cache under test; never locally (DISTCC_FALLBACK=0)."""
    result = run_distcc(["gcc", *args], hosts=cache.hosts, cwd=cwd)
    assert result.returncode == 0, result.stderr


def _answer_project(root: Path, value: int) -> Path:
    root.mkdir(parents=True)
    (root / "answer.c").write_text(f"int answer(void) {{ return {value}; }}\n")
    (root / "main.c").write_text(MAIN)
    return root


def _run_program(root: Path, *objects: str) -> subprocess.CompletedProcess[str]:
    _gcc(["-o", "prog", *objects], root)
    return subprocess.run([str(root / "prog")], capture_output=True, text=True, timeout=30,
                          check=False)  # fmt: skip


def _forged_old_format(key: str, obj: bytes) -> bytes:
    return old_format_entry(CachedResult(obj=obj))


def _forged_wrong_mac(key: str, obj: bytes) -> bytes:
    return encode_entry(key, CachedResult(obj=obj), b"not the farm's secret, but as long")


@pytest.mark.parametrize("forge", [_forged_old_format, _forged_wrong_mac],
                         ids=["old-format", "wrong-mac"])  # fmt: skip
def test_a_forged_entry_under_the_victims_key_is_a_miss_and_counted(
    cache: CacheUnderTest, tmp_path: Path, forge: Callable[[str, bytes], bytes]
) -> None:
    # The attacker, a client too, builds the victim's file to learn its key (anyone who
    # can read the store sees it), compiles an evil object and plants it there.
    attacker = _answer_project(tmp_path / "attacker", 42)
    _remote(cache, ["-c", *CFLAGS, "answer.c", "-o", "answer.o"], attacker)
    (key,) = cache.wait_entries(1)
    evil = _answer_project(tmp_path / "evil", 666)
    _gcc(["-c", *CFLAGS, "answer.c", "-o", "answer.o"], evil)
    assert _run_program(evil, "main.c", "answer.o").stdout == "666\n"
    cache.plant(key, forge(key, (evil / "answer.o").read_bytes()))
    before = cache.status()

    victim = _answer_project(tmp_path / "victim", 42)
    _remote(cache, ["-c", *CFLAGS, "answer.c", "-o", "answer.o"], victim)
    _gcc(["-c", *CFLAGS, "answer.c", "-o", "local.o"], victim)
    assert (victim / "answer.o").read_bytes() == (victim / "local.o").read_bytes()
    assert _run_program(victim, "main.c", "answer.o").stdout == "42\n"
    after = cache.status()
    assert after["rejected"] - before["rejected"] == 1, after
    assert after["hits"] == before["hits"], after
    (event,) = cache.events("cache_rejected_entry")
    assert event["key"] == key and event["level"] == "warning", event
    assert f"{cache.rejected_metric} 1.0\n" in cache.metrics()


def test_the_same_text_as_cxx_then_as_c_gives_the_c_client_the_c_object(
    cache: CacheUnderTest, tmp_path: Path
) -> None:
    """The review's case: gcc compiles value.ii as C++ and value.i as C; the text is the
    same, and a key without the suffix handed the C++ object to the C build."""
    cxx, c = tmp_path / "cxx", tmp_path / "c"
    for root, name in ((cxx, "value.ii"), (c, "value.i")):
        root.mkdir()
        (root / name).write_bytes(BOTH_LANGUAGES)
        (root / "main.c").write_text(VALUE_MAIN)
    _remote(cache, ["-c", *CFLAGS, "value.ii", "-o", "value.o"], cxx)
    cache.wait_entries(1)
    _remote(cache, ["-c", *CFLAGS, "value.i", "-o", "value.o"], c)

    for root, name in ((cxx, "value.ii"), (c, "value.i")):
        _gcc(["-c", *CFLAGS, name, "-o", "local.o"], root)
        assert (root / "value.o").read_bytes() == (root / "local.o").read_bytes(), name
    assert _run_program(c, "main.c", "value.o").returncode == 4  # sizeof('a') in C
    assert _run_program(cxx, "main.c", "value.o").returncode == 1  # ... and in C++
    assert cache.status()["hits"] == 0
    assert len(cache.wait_entries(2)) == 2


def test_the_balancer_reaches_redis_as_a_user_whose_password_is_in_a_file(
    start_server: StartServer, start_balancer: StartBalancer, tmp_path: Path
) -> None:
    """Redis as docs/cache.md runs it for a farm: a password, and the balancers as an
    ACL user that may only GETRANGE (the bounded read), SET and DEL; the password from
    a file, in no URL."""
    redis_server = RedisServer(password=secrets.token_hex(16))
    try:
        admin = redis.Redis.from_url(redis_server.url, password=redis_server.password)
        password = secrets.token_hex(16)
        admin.acl_setuser("distlb", enabled=True, passwords=[f"+{password}"], keys=["*"],
                          reset_channels=True, categories=["-@all"],
                          commands=["+getrange", "+set", "+del"])  # fmt: skip
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis.from_url(redis_server.url).set("planted", b"evil")  # (no password)
        server = start_server("--jobs", "2")
        url = f"redis://distlb@127.0.0.1:{redis_server.port}/0"

        def balancer(password_file: Path) -> CacheUnderTest:
            started = start_balancer(
                "--backend", spec(server), "--cache-redis", url, "--cache-timeout", "2",
                "--cache-redis-password-file", str(password_file),
                "--cache-secret-file", str(farm_secret()),
            )  # fmt: skip
            started.wait_healthy(1)
            return CacheUnderTest(
                hosts=f"127.0.0.1:{started.port}/2,lzo",
                keys=lambda: [k.decode() for k in entry_keys(admin) if isinstance(k, bytes)],
                plant=lambda key, value: None,
                status=lambda: dict(started.status()["cache"]),
                events=started.events,
            )

        good = balancer(write_secret(tmp_path / "password", password.encode() + b"\n"))
        for name in ("alice", "bob"):
            project = _answer_project(tmp_path / name, 42)
            _remote(good, ["-c", *CFLAGS, "answer.c", "-o", "answer.o"], project)
            assert _run_program(project, "main.c", "answer.o").stdout == "42\n"
            good.wait_entries(1)
        assert (good.status()["hits"], good.status()["bypasses"]) == (1, 0), good.status()

        wrong = balancer(write_secret(tmp_path / "wrong", b"not-the-password"))
        carol = _answer_project(tmp_path / "carol", 42)
        _remote(wrong, ["-c", *CFLAGS, "answer.c", "-o", "answer.o"], carol)  # (compiled)
        assert _run_program(carol, "main.c", "answer.o").stdout == "42\n"
        assert wrong.status()["hits"] == 0 and wrong.status()["bypasses"] >= 1
    finally:
        redis_server.stop()
