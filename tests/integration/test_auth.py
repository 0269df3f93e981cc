"""Issue 7 acceptance: Kerberos (GSSAPI) authentication as the real distcc client speaks it.

A real KDC (k5test with Debian's krb5-kdc) per module; the real client with
``,auth`` and ``DISTCC_PRINCIPAL=host``; distlb-server and distlb-balancer with
``--auth``. Principals: alice (allowed), bob (allowed and denied: deny wins),
carol (not listed), and the balancer's own ``balancer/localhost``.
"""

from __future__ import annotations

import json
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.distcc import CLIENT_TIMEOUT_S, distcc_env, run_distcc
from tests.support.kdc import AuthDistccd, Kdc
from tests.support.projects import assert_identical_to_local, local_object, sources
from tests.support.servers import (
    BalancerProcess,
    ServerProcess,
    StartBalancer,
    StartServer,
    free_port,
    wait_until,
)

pytestmark = pytest.mark.integration

ONE_FILE = "int answer(void) { return 6 * 7; }\n"


@pytest.fixture(scope="module")
def kdc() -> Iterator[Kdc]:
    realm = Kdc()
    for name in ("alice", "bob", "carol"):
        realm.add_user(name)
    yield realm
    realm.stop()


@pytest.fixture(scope="module")
def balancer_identity(kdc: Kdc) -> tuple[str, str]:
    """(principal, client keytab) of the balancer."""
    return kdc.service_keytab("balancer/localhost")


@pytest.fixture
def lists(shared_tmp: Path, kdc: Kdc, balancer_identity: tuple[str, str]) -> dict[str, Path]:
    allow = shared_tmp / "allow-principals"
    allow.write_text(
        "# people with commit rights\n"
        f"{kdc.principal('alice')}\n"
        f"{kdc.principal('bob')}   # also on the deny list: deny wins\n"
    )
    deny = shared_tmp / "deny-principals"
    deny.write_text(f"{kdc.principal('bob')}\n")
    only_balancer = shared_tmp / "balancer-only"
    only_balancer.write_text(f"{balancer_identity[0]}\n")
    return {"allow": allow, "deny": deny, "balancer": only_balancer}


def _auth_env(ccache: str) -> dict[str, str]:
    return {"KRB5CCNAME": ccache, "DISTCC_PRINCIPAL": "host"}


def _make(
    project: Path, hosts: str, ccache: str, jobs: int = 4
) -> subprocess.CompletedProcess[str]:
    env = distcc_env(hosts, fallback=False, extra=_auth_env(ccache))
    return subprocess.run(
        ["timeout", str(CLIENT_TIMEOUT_S), "make", f"-j{jobs}", "CC=distcc gcc"],
        cwd=project, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip


def _compile_one(
    workdir: Path, hosts: str, ccache: str, *, fallback: bool
) -> subprocess.CompletedProcess[str]:
    workdir.mkdir(exist_ok=True)
    (workdir / "one.c").write_text(ONE_FILE)
    (workdir / "one.o").unlink(missing_ok=True)
    return run_distcc(["gcc", "-c", "one.c", "-o", "one.o"], hosts=hosts, cwd=workdir,
                      fallback=fallback, extra_env=_auth_env(ccache), timeout_s=60)  # fmt: skip


def _refusals(proc: ServerProcess) -> list[dict[str, Any]]:
    return proc.events("auth_refused")


def _logged(proc: ServerProcess, name: str, count: int) -> list[dict[str, Any]]:
    """The process's ``name`` events once at least ``count`` have been read from its
    stderr (a reader thread drains it, so a line can trail the HTTP counters)."""
    found: list[dict[str, Any]] = wait_until(
        lambda: len(events := proc.events(name)) >= count and events, 10, f"{count} {name}"
    )
    return found


# --- the server's side of the handshake ------------------------------------------


def test_server_allowed_principal_builds_byte_identical(
    kdc: Kdc, lists: dict[str, Path], start_server: StartServer, c_project: Path
) -> None:
    server = start_server("--jobs", "4", "--auth", "--keytab", kdc.keytab,
                          "--allow-principals", str(lists["allow"]),
                          "--deny-principals", str(lists["deny"]))  # fmt: skip
    result = _make(c_project, f"127.0.0.1:{server.port}/4,auth", kdc.ticket("alice"))
    assert result.returncode == 0, result.stderr
    assert_identical_to_local(c_project)
    jobs = len(sources(c_project))
    wait_until(lambda: server.counters()["ok"] == jobs, 10, "every job counted")
    assert server.counters()["rejected_auth"] == 0
    done = _logged(server, "job_done", jobs)
    assert len(done) == jobs
    assert all(e["principal"] == kdc.principal("alice") and e["job_id"] for e in done)


def test_idle_connections_from_one_address_leave_handshakes_to_the_others(
    kdc: Kdc, lists: dict[str, Path], start_server: StartServer, c_project: Path
) -> None:
    """64 connections from one address that never send a credential took every
    handshake place (--max-handshakes, 64) for --auth-timeout at a time: nobody else
    could log in. One address now has a share of them (--max-handshakes-per-address,
    8); its other connections wait for one of its own to end."""
    server = start_server("--jobs", "4", "--auth", "--keytab", kdc.keytab,
                          "--allow-principals", str(lists["allow"]),
                          "--auth-timeout", "60")  # fmt: skip
    idle = []
    try:
        for _ in range(64):
            sock = socket.socket()
            idle.append(sock)
            sock.bind(("127.0.0.2", 0))  # (loopback too: all of 127/8 is local)
            sock.connect(("127.0.0.1", server.port))
        # Each connection's handshake has begun (or waits) once the server counts it.
        wait_until(lambda: server.status()["connections"]["open"] == 64, 20, "the idle ones in")
        result = _make(c_project, f"127.0.0.1:{server.port}/4,auth", kdc.ticket("alice"))
        assert result.returncode == 0, result.stderr  # (no fallback: compiled remotely)
        assert server.counters()["ok"] == len(sources(c_project))
        assert server.counters()["rejected_auth"] == 0
    finally:
        for sock in idle:
            sock.close()


CASES = {
    # case: (how the client is set up, expected reason in the auth_refused event)
    "not_listed": ("carol", "principal_refused"),
    "denied": ("bob", "principal_refused"),
    "no_ticket": (None, "no_token"),
    "expired_ticket": ("expired", "no_token"),
    "no_auth_option": ("alice-plain", "no_handshake"),
}


def _client_for(case: str, kdc: Kdc, shared_tmp: Path) -> tuple[str, bool]:
    """(ccache, whether the host spec carries ,auth) for a refusal case."""
    who = CASES[case][0]
    if who is None:
        return str(shared_tmp / "no-such-ccache"), True
    if who == "expired":
        return kdc.expired_ticket("alice"), True
    if who == "alice-plain":
        return kdc.ticket("alice"), False
    return kdc.ticket(who), True


def _refused_both_ways(
    proc: ServerProcess, port: int, case: str, kdc: Kdc, shared_tmp: Path
) -> None:
    """The real client set up for ``case`` against ``port``: with fallback it compiles
    locally, with DISTCC_FALLBACK=0 it fails (default backoff: no retry storm); ``proc``
    logs both refusals, each with the case's reason and a job id, as warnings."""
    ccache, with_auth = _client_for(case, kdc, shared_tmp)
    hosts = f"127.0.0.1:{port}" + (",auth" if with_auth else "")
    workdir = shared_tmp / f"work-{case}"
    result = _compile_one(workdir, hosts, ccache, fallback=True)
    assert result.returncode == 0, result.stderr
    assert (workdir / "one.o").exists()
    result = _compile_one(workdir, hosts, ccache, fallback=False)
    assert result.returncode != 0
    assert not (workdir / "one.o").exists()
    wait_until(lambda: len(_refusals(proc)) >= 2, 10, "two auth_refused events")
    for event in _refusals(proc):
        assert event["reason"] == CASES[case][1], event
        assert event["job_id"] and event["level"] == "warning"


@pytest.mark.parametrize("case", list(CASES))
def test_server_refuses_before_any_compile(
    kdc: Kdc, lists: dict[str, Path], start_server: StartServer, shared_tmp: Path, case: str
) -> None:
    server = start_server("--auth", "--keytab", kdc.keytab,
                          "--allow-principals", str(lists["allow"]),
                          "--deny-principals", str(lists["deny"]))  # fmt: skip
    _refused_both_ways(server, server.port, case, kdc, shared_tmp)
    if CASES[case][1] == "principal_refused":
        who = CASES[case][0]
        assert all(e["principal"] == kdc.principal(str(who)) for e in _refusals(server))
    counters = server.counters()
    assert counters["rejected_auth"] >= 2
    assert counters["accepted"] == 0 and not server.events("job_done")
    assert 'outcome="rejected_auth"' in server.http("/metrics")


# --- the balancer: both legs authenticated; servers that obey only the balancer ---


@pytest.fixture
def guarded_server(kdc: Kdc, lists: dict[str, Path], start_server: StartServer) -> ServerProcess:
    """A server that accepts only the balancer's principal."""
    server: ServerProcess = start_server(
        "--jobs", "4", "--auth", "--keytab", kdc.keytab,
        "--allow-principals", str(lists["balancer"]),
    )  # fmt: skip
    return server


def _start_auth_balancer(
    start_balancer: StartBalancer, kdc: Kdc, lists: dict[str, Path], client_keytab: str,
    backend: str, *extra: str,
) -> BalancerProcess:  # fmt: skip
    balancer: BalancerProcess = start_balancer(
        "--backend", backend, "--auth", "--keytab", kdc.keytab,
        "--allow-principals", str(lists["allow"]), "--deny-principals", str(lists["deny"]),
        "--client-keytab", client_keytab, *extra,
    )  # fmt: skip
    return balancer


def test_balancer_allowed_principal_builds_and_servers_obey_only_the_balancer(
    kdc: Kdc,
    lists: dict[str, Path],
    balancer_identity: tuple[str, str],
    guarded_server: ServerProcess,
    start_balancer: StartBalancer,
    c_project: Path,
    shared_tmp: Path,
) -> None:
    server = guarded_server
    backend = f"127.0.0.1:{server.port},status={server.stats_port},auth"
    balancer = _start_auth_balancer(start_balancer, kdc, lists, balancer_identity[1], backend)
    balancer.wait_healthy(1)  # its probes authenticate as the balancer

    alice = kdc.ticket("alice")
    result = _make(c_project, f"127.0.0.1:{balancer.port}/4,auth", alice)
    assert result.returncode == 0, result.stderr
    assert_identical_to_local(c_project)
    jobs = len(sources(c_project))
    wait_until(lambda: balancer.totals()["ok"] == jobs, 10, "every job counted")
    done = _logged(balancer, "job_done", jobs)
    assert len(done) == jobs
    assert all(e["principal"] == kdc.principal("alice") and e["job_id"] for e in done)
    # The dashboard says who: alice's principal, not her address.
    clients = json.loads(balancer.http("/dashboard.json"))["activity"]["clients"]
    assert [(c["client"], c["jobs"]) for c in clients] == [(kdc.principal("alice"), jobs)]
    on_server = _logged(server, "job_done", jobs)  # and the balancer's probes
    assert all(e["principal"] == balancer_identity[0] for e in on_server)
    assert balancer.totals()["rejected_auth"] == 0

    # Going around the balancer: alice straight to the server is refused.
    workdir = shared_tmp / "around"
    result = _compile_one(workdir, f"127.0.0.1:{server.port},auth", alice, fallback=False)
    assert result.returncode != 0 and not (workdir / "one.o").exists()
    refused = wait_until(lambda: _refusals(server), 10, "the server's refusal")
    assert refused[-1]["reason"] == "principal_refused"
    assert refused[-1]["principal"] == kdc.principal("alice")
    # And a client without ,auth does not get in either.
    result = _compile_one(workdir, f"127.0.0.1:{server.port}", alice, fallback=False)
    assert result.returncode != 0
    wait_until(lambda: _refusals(server)[-1]["reason"] == "no_handshake", 10, "no_handshake")


@pytest.mark.parametrize("case", list(CASES))
def test_balancer_refuses_before_any_compile(
    kdc: Kdc,
    lists: dict[str, Path],
    balancer_identity: tuple[str, str],
    start_balancer: StartBalancer,
    shared_tmp: Path,
    case: str,
) -> None:
    # No backend is needed: nothing of the job may get that far.
    balancer = _start_auth_balancer(
        start_balancer, kdc, lists, balancer_identity[1], f"127.0.0.1:{free_port()},kind=distccd"
    )
    _refused_both_ways(balancer, balancer.port, case, kdc, shared_tmp)
    totals = balancer.totals()
    assert totals["rejected_auth"] >= 2
    assert totals["ok"] == totals["bad_request"] == totals["failed"] == 0
    assert not balancer.events("job_done")
    assert 'outcome="rejected_auth"' in balancer.http("/metrics")


def test_balancer_rereads_the_allow_list_when_it_changes(
    kdc: Kdc,
    lists: dict[str, Path],
    balancer_identity: tuple[str, str],
    guarded_server: ServerProcess,
    start_balancer: StartBalancer,
    shared_tmp: Path,
) -> None:
    server = guarded_server
    backend = f"127.0.0.1:{server.port},status={server.stats_port},auth"
    balancer = _start_auth_balancer(start_balancer, kdc, lists, balancer_identity[1], backend)
    balancer.wait_healthy(1)
    carol = kdc.ticket("carol")
    hosts = f"127.0.0.1:{balancer.port},auth"
    workdir = shared_tmp / "reread"
    assert _compile_one(workdir, hosts, carol, fallback=False).returncode != 0

    with lists["allow"].open("a") as allow:
        allow.write(f"{kdc.principal('carol')}\n")
    # Checked at most once a second: carol gets in within a bounded time.
    wait_until(
        lambda: _compile_one(workdir, hosts, carol, fallback=False).returncode == 0,
        15, "carol admitted after the allow list changed", interval_s=0.5,
    )  # fmt: skip
    assert _logged(balancer, "job_done", 1)[-1]["principal"] == kdc.principal("carol")


# --- hostile handshakes: never crash or hang the balancer ---------------------------


def _exchange(
    port: int, payload: bytes, *, half_close: bool = True, timeout_s: float = 10
) -> tuple[bytes, float]:
    """Send ``payload`` and read until the balancer closes: (what came back, seconds)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.settimeout(timeout_s)
        received = b""
        try:
            conn.sendall(payload)
            if half_close:
                conn.shutdown(socket.SHUT_WR)
            while chunk := conn.recv(65536):
                received += chunk
        except ConnectionError:
            pass
    return received, time.monotonic() - started


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def fuzz_target(kdc: Kdc, balancer_identity: tuple[str, str]) -> Iterator[BalancerProcess]:
    """One balancer with --auth (1 s handshake timeout) in front of a server that obeys
    only it; the fuzzing tests hit the balancer, the last one builds through it."""
    work = Path(tempfile.mkdtemp(prefix="distlb-fuzz-"))
    work.chmod(0o755)
    (work / "tmp").mkdir(mode=0o1777)
    (work / "tmp").chmod(0o1777)
    (work / "allow").write_text(f"{kdc.principal('alice')}\n")
    (work / "balancer-only").write_text(f"{balancer_identity[0]}\n")
    server = ServerProcess.start(
        ["--jobs", "2", "--auth", "--keytab", kdc.keytab,
         "--allow-principals", str(work / "balancer-only")], tmp_dir=work / "tmp",
    )  # fmt: skip
    balancer = None
    try:
        balancer = BalancerProcess.start_balancer([
            "--backend", f"127.0.0.1:{server.port},status={server.stats_port},auth",
            "--auth", "--keytab", kdc.keytab, "--allow-principals", str(work / "allow"),
            "--auth-timeout", "1", "--client-keytab", balancer_identity[1],
        ], None)  # fmt: skip
        yield balancer
    finally:
        if balancer is not None:
            balancer.stop()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def test_huge_token_claim_is_refused_before_reading(fuzz_target: BalancerProcess) -> None:
    # Keep our side open: the balancer must close without waiting for 4 GiB.
    received, seconds = _exchange(fuzz_target.port, b"*TLENffffffff", half_close=False)
    # Refused from the header (the event says so), not by the 1 s handshake timeout.
    assert received == b"*" and seconds < 3.0
    event = wait_until(lambda: _refusals(fuzz_target), 10, "the refusal logged")[-1]
    assert event["reason"] == "bad_handshake" and "TLEN claims 4294967295" in event["detail"]


def test_silent_client_is_dropped_after_the_handshake_timeout(
    fuzz_target: BalancerProcess,
) -> None:
    received, seconds = _exchange(fuzz_target.port, b"", half_close=False)
    assert received == b"" and 0.9 <= seconds < 5.0  # --auth-timeout 1
    # The same after the handshake byte: silence where a token should be.
    received, seconds = _exchange(fuzz_target.port, b"*", half_close=False)
    assert received == b"*" and 0.9 <= seconds < 5.0
    wait_until(
        lambda: [e["reason"] for e in _refusals(fuzz_target)].count("timeout") >= 2,
        10, "both timeouts logged",
    )  # fmt: skip


_garbage = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda n, body: b"TLEN%08x" % n + body, st.integers(0, 0xFFFFFFFF), st.binary(max_size=300)
    ),
    st.builds(
        lambda body, cut: (b"TLEN%08x" % len(body) + body)[:cut],
        st.binary(min_size=1, max_size=2000),
        st.integers(0, 2012),
    ),
)


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(garbage=_garbage)
def test_fuzzed_handshakes_are_closed_promptly(
    fuzz_target: BalancerProcess, garbage: bytes
) -> None:
    received, seconds = _exchange(fuzz_target.port, b"*" + garbage)
    # We closed our side: whatever the bytes, the balancer answers at most its
    # handshake byte and a GSS error never becomes a verdict or a reply.
    assert received in (b"*", b"*n", b""), received[:40]
    assert seconds < 3.0


def test_balancer_serves_a_good_job_after_fuzzing(
    fuzz_target: BalancerProcess, kdc: Kdc, shared_tmp: Path
) -> None:
    balancer = fuzz_target
    rss_before = _rss_kib(balancer.proc.pid)
    # Full-size random tokens, one after another: each is bounded, and so is the memory.
    rng = random.Random(7)
    for _ in range(40):
        body = rng.randbytes(64 * 1024)
        received, seconds = _exchange(balancer.port, b"*TLEN00010000" + body)
        assert received == b"*" and seconds < 3.0
    assert balancer.proc.poll() is None, "the balancer died"
    assert not balancer.events("job_crashed")
    assert _rss_kib(balancer.proc.pid) - rss_before < 50 * 1024
    assert balancer.totals()["rejected_auth"] >= 40

    # Still serving: alice's real client builds through it, to the guarded server.
    balancer.wait_healthy(1)
    workdir = shared_tmp / "after-fuzz"
    result = _compile_one(workdir, f"127.0.0.1:{balancer.port},auth", kdc.ticket("alice"),
                          fallback=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    expected = local_object(workdir, workdir / "one.c", "gcc", cflags="")
    assert (workdir / "one.o").read_bytes() == expected
    assert _logged(balancer, "job_done", 1)[-1]["principal"] == kdc.principal("alice")


def test_refused_client_with_a_one_second_backoff_compiles_locally_after_one_try(
    kdc: Kdc,
    lists: dict[str, Path],
    balancer_identity: tuple[str, str],
    start_balancer: StartBalancer,
    shared_tmp: Path,
) -> None:
    # docs/auth.md: with ,auth use DISTCC_BACKOFF_PERIOD=1, not 0. Debian's distcc 3.4
    # goes back to picking a host after any failure and, with the backoff off, picks the
    # same one again: a refused principal would retry until killed.
    balancer = _start_auth_balancer(
        start_balancer, kdc, lists, balancer_identity[1], f"127.0.0.1:{free_port()},kind=distccd"
    )
    workdir = shared_tmp / "backoff"
    workdir.mkdir()
    (workdir / "one.c").write_text(ONE_FILE)
    env = {**_auth_env(kdc.ticket("carol")), "DISTCC_BACKOFF_PERIOD": "1"}
    result = run_distcc(["gcc", "-c", "one.c", "-o", "one.o"],
                        hosts=f"127.0.0.1:{balancer.port},auth", cwd=workdir, fallback=True,
                        extra_env=env, timeout_s=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (workdir / "one.o").exists()
    assert len(_logged(balancer, "auth_refused", 1)) == 1


def test_balancer_authenticates_to_a_real_distccd_with_auth(
    kdc: Kdc,
    lists: dict[str, Path],
    balancer_identity: tuple[str, str],
    start_balancer: StartBalancer,
    c_project: Path,
) -> None:
    daemon = AuthDistccd(kdc, whitelist=[balancer_identity[0]])
    try:
        backend = f"127.0.0.1:{daemon.port},kind=distccd,slots=2,auth"
        balancer = _start_auth_balancer(start_balancer, kdc, lists, balancer_identity[1], backend)
        balancer.wait_healthy(1)  # distccd accepted the balancer's probes
        result = _make(c_project, f"127.0.0.1:{balancer.port}/4,auth", kdc.ticket("alice"))
        assert result.returncode == 0, result.stderr
        assert_identical_to_local(c_project)
        jobs = len(sources(c_project))
        wait_until(lambda: balancer.totals()["ok"] == jobs, 10, "every job counted")
        assert balancer.backend(f"127.0.0.1:{daemon.port}")["ok"] == jobs
    finally:
        daemon.stop()


def test_handshakes_beyond_the_limit_are_closed_at_once(
    kdc: Kdc,
    lists: dict[str, Path],
    balancer_identity: tuple[str, str],
    start_balancer: StartBalancer,
) -> None:
    balancer = _start_auth_balancer(
        start_balancer, kdc, lists, balancer_identity[1], f"127.0.0.1:{free_port()},kind=distccd",
        "--max-handshakes", "2", "--auth-timeout", "5",
    )  # fmt: skip
    holders = []
    try:
        for _ in range(2):  # two handshakes held open: each got its '*' back
            conn = socket.create_connection(("127.0.0.1", balancer.port))
            conn.settimeout(10)
            conn.sendall(b"*")
            assert conn.recv(1) == b"*"
            holders.append(conn)
        received, seconds = _exchange(balancer.port, b"*", half_close=False)
        assert received == b"" and seconds < 2.0
        event = wait_until(lambda: _refusals(balancer), 10, "the refusal")[-1]
        assert event["reason"] == "too_many_handshakes"
    finally:
        for conn in holders:
            conn.close()


def test_one_address_cannot_take_every_handshake_place(
    kdc: Kdc,
    lists: dict[str, Path],
    balancer_identity: tuple[str, str],
    start_balancer: StartBalancer,
) -> None:
    balancer = _start_auth_balancer(
        start_balancer, kdc, lists, balancer_identity[1], f"127.0.0.1:{free_port()},kind=distccd",
        "--max-handshakes", "4", "--max-handshakes-per-address", "2", "--auth-timeout", "5",
    )  # fmt: skip
    holders = []

    def hold(source: str) -> socket.socket:
        conn = socket.create_connection(("127.0.0.1", balancer.port), source_address=(source, 0))
        holders.append(conn)
        conn.settimeout(10)
        conn.sendall(b"*")
        return conn

    try:
        for _ in range(2):  # 127.0.0.1 holds two handshakes open: its share
            assert hold("127.0.0.1").recv(1) == b"*"
        third = hold("127.0.0.1")  # past its share: it waits for one of its own to end
        # Another host still gets a place: the whole limit (4) is not reached.
        assert hold("127.0.0.2").recv(1) == b"*"
        third.setblocking(False)
        with pytest.raises(BlockingIOError):
            third.recv(1)  # no handshake byte back, and not closed: waiting
        third.settimeout(10)
        holders[0].close()  # one of 127.0.0.1's own ends: its place goes to the third
        assert third.recv(1) == b"*"
        assert hold("127.0.0.3").recv(1) == b"*"  # the fourth place
        assert hold("127.0.0.4").recv(1) == b""  # all four taken: closed at once
        full = wait_until(
            lambda: [e for e in _refusals(balancer) if e["reason"] == "too_many_handshakes"],
            10, "the refusal",
        )  # fmt: skip
        assert [e["detail"] for e in full] == ["4 in progress"]
    finally:
        for conn in holders:
            conn.close()


def test_server_survives_crafted_handshakes_and_still_serves(
    kdc: Kdc, lists: dict[str, Path], start_server: StartServer, shared_tmp: Path
) -> None:
    server = start_server("--auth", "--keytab", kdc.keytab, "--auth-timeout", "1",
                          "--allow-principals", str(lists["allow"]))  # fmt: skip
    crafted = [
        b"*TLENffffffff",  # a 4 GiB claim
        b"*TLEN00000000",  # an empty token
        b"*TLEN0000zzzz",  # not hex
        b"*TLEN00000100" + b"x" * 10,  # cut off
        b"*TLEN00010000" + random.Random(3).randbytes(64 * 1024),  # full-size garbage
        b"**",  # a second handshake byte where a token starts
        b"*",  # then nothing
    ]
    for payload in crafted:
        received, seconds = _exchange(server.port, payload)
        assert received in (b"*", b""), received[:40]
        assert seconds < 3.0
    wait_until(lambda: server.counters()["rejected_auth"] == len(crafted), 10, "all counted")
    counters = server.counters()
    assert server.proc.poll() is None and counters["other"] == 0 and counters["accepted"] == 0
    assert server.status()["busy"] == 0

    workdir = shared_tmp / "after-crafted"
    result = _compile_one(workdir, f"127.0.0.1:{server.port},auth", kdc.ticket("alice"),
                          fallback=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert _logged(server, "job_done", 1)[-1]["principal"] == kdc.principal("alice")
