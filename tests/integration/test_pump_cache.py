"""Issue 29: pump results cached by the balancer, keyed with the servers' system headers.

A warm ``pump make`` through a balancer with a Redis cache is answered from the cache
(no server compiles, every object and ``.d`` equal to a local build's); a changed file
of the client's misses. A server whose system headers change (a directory the test
binds over ``/usr/local/include``, one of gcc's system directories, in the server's own
mount namespace) reports another fingerprint, by content (same size and time), at once
(no job has to find it), turns pump jobs away until balancers have heard, and drops a
job whose headers changed while it ran.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
import redis

from server.pump import ask_include_dirs
from tests.integration.test_pump_client import OUTPUTS, _local_then_pump
from tests.integration.test_pump_server import project, request_for, send, system_links
from tests.support.pump import run_pump_make
from tests.support.redis import RedisServer
from tests.support.secrets import farm_secret
from tests.support.servers import ServerProcess, StartBalancer, StartServer, wait_until
from wire.events import PumpEntry
from wire.writer import encode_pump_request

pytestmark = pytest.mark.integration

LOCAL_INCLUDE = "/usr/local/include"


def test_a_warm_pump_build_through_the_balancer_is_answered_from_the_cache(
    start_server: StartServer,
    start_balancer: StartBalancer,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    servers = [start_server("--compiler", "gcc", "--jobs", "2") for _ in range(2)]
    balancer = start_balancer(
        *(a for s in servers for a in ("--backend", f"127.0.0.1:{s.port},status={s.stats_port}")),
        "--cache-redis", redis_server.url, "--cache-timeout", "2",
        "--cache-secret-file", str(farm_secret()),
    )  # fmt: skip
    balancer.wait_healthy(2)
    hosts = f"127.0.0.1:{balancer.port}/4,cpp,lzo"

    def compiled() -> int:
        return sum(s.counters()["pump"] for s in servers)

    def cache() -> dict[str, Any]:
        return dict(balancer.status()["cache"])

    # Cold: compiled by the servers, each result stored (in the background).
    project_dir, local, _, _ = _local_then_pump(tmp_path, hosts, make_args=("-j3",))
    for name in OUTPUTS:
        assert (project_dir / name).read_bytes() == local[name], name
    wait_until(lambda: cache()["stored"] >= 3, 20, "3 pump results stored")
    store = redis.Redis.from_url(redis_server.url, decode_responses=False)
    entries = [store.get(k) for k in store.keys("*")]
    assert len(entries) == 3 and all(
        isinstance(e, bytes) and e.startswith(b"DLBP1\n") for e in entries
    )

    # Warm: from the cache, byte for byte, .d included; no server compiles.
    before, hits = compiled(), cache()["hits"]
    subprocess.run(["make", "-s", "clean"], cwd=project_dir, check=True, timeout=60)
    log = tmp_path / "warm.log"
    warm = run_pump_make(project_dir, hosts, make_args=("-j3",),
                         extra_env={"DISTCC_VERBOSE": "1", "DISTCC_LOG": str(log)})  # fmt: skip
    assert warm.returncode == 0, warm.stderr
    assert log.read_text().count("got DONE00000003") == 3
    for name in OUTPUTS:
        assert (project_dir / name).read_bytes() == local[name], name
    assert cache()["hits"] == hits + 3
    assert compiled() == before == 3

    # One source changed: that file misses (and is compiled), the others hit.
    helper = project_dir / "lib" / "helper.c"
    helper.write_text(helper.read_text() + "int more(void) { return 2; }\n")
    subprocess.run(["make", "-s", "clean"], cwd=project_dir, check=True, timeout=60)
    again = run_pump_make(project_dir, hosts, make_args=("-j3",))
    assert again.returncode == 0, again.stderr
    assert compiled() == 4 and cache()["hits"] == hits + 5
    for name in ("build/main.o", "build/util.o", "build/main.d", "build/util.d"):
        assert (project_dir / name).read_bytes() == local[name], name


def _bound_include(directory: Path) -> list[str]:
    """A prefix that runs the server in its own mount namespace with ``directory`` over
    gcc's ``/usr/local/include`` (the machine's own is not touched)."""
    script = f'mount --bind {shlex.quote(str(directory))} {LOCAL_INCLUDE} && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"]


def _fingerprint(server: ServerProcess) -> str:
    return str(server.status()["compilers"]["gcc"]["pump_headers"])


def _same_stat_edit(header: Path, text: str) -> None:
    """Replace ``header``'s content with ``text`` of the same size, keeping its times."""
    before = header.stat()
    assert len(text) == before.st_size
    header.write_text(text)
    os.utime(header, ns=(before.st_atime_ns, before.st_mtime_ns))


def _with_site_header(
    start_server: StartServer, tmp_path: Path, compiler: str
) -> tuple[ServerProcess, Path, Path]:
    """A server for ``compiler`` whose /usr/local/include holds ``site.h`` (SITE 1) from
    a directory of the test's, that directory, and a project's build directory."""
    include = tmp_path / "local-include"
    include.mkdir()
    (include / "site.h").write_text("#define SITE 1\n")
    server = start_server("--compiler", compiler, "--jobs", "2", prefix=_bound_include(include))
    return server, include, project(tmp_path / "proj")


def test_a_server_whose_system_headers_change_reports_them_at_once_and_turns_pump_jobs_away(
    start_server: StartServer, tmp_path: Path
) -> None:
    server, include, build = _with_site_header(start_server, tmp_path, "gcc")
    first = _fingerprint(server)
    assert first
    site = PumpEntry(
        str(build.parent / "src" / "site.c"), body=b"#include <site.h>\nint s = SITE;\n"
    )
    argv = ("gcc", "-c", "../src/site.c", "-o", "site.o")
    data = encode_pump_request(request_for(build, argv, site))
    reply = send(server.port, data)
    assert reply is not None and reply.status == 0

    _same_stat_edit(include / "site.h", "#define SITE 2\n")  # (content only: same size, times)

    # Read again at once, with no job asking: the report says the new fingerprint.
    second = wait_until(lambda: _fingerprint(server) != first and _fingerprint(server), 20,
                        "the new headers' fingerprint")  # fmt: skip
    assert server.logged("pump_headers_changed")
    # Then, for a moment, jobs are still turned away (balancers hear of it meanwhile).
    assert send(server.port, data) is None
    assert server.logged("turned_away")["pump"] is True
    served = wait_until(lambda: send(server.port, data), 20, "a pump job served again")
    assert served.status == 0 and served.obj != reply.obj  # (SITE is 2 now)
    assert _fingerprint(server) == second


def test_a_pump_job_whose_system_headers_change_while_it_runs_is_dropped(
    start_server: StartServer, tmp_path: Path
) -> None:
    server, include, build = _with_site_header(start_server, tmp_path, "g++")
    # A compile of some seconds (a constant evaluated by a long loop), so that the test
    # sees it running before it changes the header.
    slow = PumpEntry(str(build.parent / "src" / "slow.cc"), body=(
        b"#include <site.h>\nconstexpr long spin(long n) { long s = 0; "
        b"for (long i = 0; i < n; ++i) s += i % 7; return s; }\n"
        b"constexpr long value = spin(3000000L) + SITE;\nlong get() { return value; }\n"
    ))  # fmt: skip
    argv = ("g++", "-std=c++17", "-fconstexpr-loop-limit=2147483647",
            "-fconstexpr-ops-limit=4294967296", "-c", "../src/slow.cc", "-o", "slow.o")  # fmt: skip
    data = encode_pump_request(request_for(build, argv, slow))
    answer: list[object] = []
    sender = threading.Thread(target=lambda: answer.append(send(server.port, data)))
    sender.start()
    wait_until(lambda: server.status()["busy"], 30, "the slow job running")
    _same_stat_edit(include / "site.h", "#define SITE 2\n")
    sender.join(120)
    assert not sender.is_alive()
    assert answer == [None]  # (dropped unanswered, as a turn-away)
    assert server.logged("job_dropped")["pump"] is True


OUTSIDE_GCC_KEY = "/usr/lib/gcc/x86_64-linux-gnu/12/libgcc.a"
"""In clang's system directories (the GCC installation it selects, whole), not in gcc's
(only its ``include``): what a gcc pump job's key does not cover."""
PROBE = f'#if __has_include("{OUTSIDE_GCC_KEY}")\n#error sees it\n#endif\nint x;\n'.encode()


@pytest.mark.parametrize("compiler", ["gcc", "clang"])
def test_a_pump_job_sees_only_its_own_compilers_system_directories(
    start_server: StartServer, tmp_path: Path, compiler: str
) -> None:
    """A server serves gcc and clang, and a client's include server sends the links of
    both; a gcc job's sandbox must still hold none of clang's directories, which gcc's
    fingerprint (its key) does not cover (a twenty-first review got a wrong object
    from the cache so). A clang job's holds its own."""
    server = start_server("--compiler", "gcc", "--compiler", "clang", "--jobs", "2")
    assert server.status()["compilers"][compiler]["sandbox"] == "sealed"
    build = project(tmp_path / "proj")
    probe = PumpEntry(str(build.parent / "src" / "probe.c"), body=PROBE)
    clang_links = tuple(
        PumpEntry(d, link="../" * 24 + d[1:])
        for d in ask_include_dirs(os.path.realpath("/usr/bin/clang"))
        if d not in {e.name for e in system_links()}
    )
    argv = (compiler, "-c", "../src/probe.c", "-o", "probe.o")
    reply = send(server.port, encode_pump_request(request_for(build, argv, probe, *clang_links)))
    assert reply is not None
    if compiler == "gcc":
        assert reply.status == 0, reply.stderr
        # Nor may its options name one of clang's directories (the judge's system
        # directories are the job's compiler's own).
        named = (compiler, f"-I{os.path.dirname(OUTSIDE_GCC_KEY)}", *argv[1:])
        refused = send(server.port, encode_pump_request(
            request_for(build, named, probe, *clang_links)))  # fmt: skip
        assert refused is not None and refused.status != 0
        assert b"neither in the files sent nor a system" in refused.stderr, refused.stderr
    else:
        assert reply.status != 0 and b"sees it" in reply.stderr
