"""Issue 7 acceptance: Kerberos (GSSAPI) authentication as the real distcc client speaks it.

A real KDC (k5test with Debian's krb5-kdc) per module; the real client with
``,auth`` and ``DISTCC_PRINCIPAL=host``; distlb-server and distlb-balancer with
``--auth``. Principals: alice (allowed), bob (allowed and denied: deny wins),
carol (not listed), and the balancer's own ``balancer/localhost``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.distcc import CLIENT_TIMEOUT_S, distcc_env, run_distcc
from tests.support.kdc import Kdc
from tests.support.projects import local_object, sources
from tests.support.servers import ServerProcess, wait_until

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


def _assert_identical(project: Path) -> None:
    for source in sources(project):
        remote = (project / (source.stem + ".o")).read_bytes()
        assert remote == local_object(project, source, "gcc"), f"{source.name} differs"


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


# --- the server's side of the handshake ------------------------------------------


def test_server_allowed_principal_builds_byte_identical(
    kdc: Kdc, lists: dict[str, Path], start_server: Any, c_project: Path
) -> None:
    server = start_server("--jobs", "4", "--auth", "--keytab", kdc.keytab,
                          "--allow-principals", str(lists["allow"]),
                          "--deny-principals", str(lists["deny"]))  # fmt: skip
    result = _make(c_project, f"127.0.0.1:{server.port}/4,auth", kdc.ticket("alice"))
    assert result.returncode == 0, result.stderr
    _assert_identical(c_project)
    jobs = len(sources(c_project))
    wait_until(lambda: server.counters()["ok"] == jobs, 10, "every job counted")
    assert server.counters()["rejected_auth"] == 0
    done = server.events("job_done")
    assert len(done) == jobs
    assert all(e["principal"] == kdc.principal("alice") and e["job_id"] for e in done)


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


@pytest.mark.parametrize("case", list(CASES))
def test_server_refuses_before_any_compile(
    kdc: Kdc, lists: dict[str, Path], start_server: Any, shared_tmp: Path, case: str
) -> None:
    server = start_server("--auth", "--keytab", kdc.keytab,
                          "--allow-principals", str(lists["allow"]),
                          "--deny-principals", str(lists["deny"]))  # fmt: skip
    ccache, with_auth = _client_for(case, kdc, shared_tmp)
    hosts = f"127.0.0.1:{server.port}" + (",auth" if with_auth else "")
    workdir = shared_tmp / f"work-{case}"

    # With fallback the client compiles locally...
    result = _compile_one(workdir, hosts, ccache, fallback=True)
    assert result.returncode == 0, result.stderr
    assert (workdir / "one.o").exists()
    # ... and with DISTCC_FALLBACK=0 it fails (default backoff: no retry storm).
    result = _compile_one(workdir, hosts, ccache, fallback=False)
    assert result.returncode != 0
    assert not (workdir / "one.o").exists()

    wait_until(lambda: len(_refusals(server)) >= 2, 10, "two auth_refused events")
    reason = CASES[case][1]
    for event in _refusals(server):
        assert event["reason"] == reason, event
        assert event["job_id"] and event["level"] == "warning"
    if reason == "principal_refused":
        who = CASES[case][0]
        assert all(e["principal"] == kdc.principal(str(who)) for e in _refusals(server))
    counters = server.counters()
    assert counters["rejected_auth"] >= 2
    assert counters["accepted"] == 0 and not server.events("job_done")
    assert 'outcome="rejected_auth"' in server.http("/metrics")
