"""Principal allow/deny lists: parsing, cheap re-reading on change, failing closed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from balancer.config import BalancerConfig
from balancer.routing.backend import BackendSpec, SpecError
from daemon.principals import ListUnreadable, PrincipalFile, PrincipalPolicy, parse_principals


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_principal_per_line_with_comments() -> None:
    text = "# committers\nalice@EXAMPLE.COM\n\n  bob@EXAMPLE.COM  # since 2024\n#carol@EX.COM\n"
    assert parse_principals(text) == {"alice@EXAMPLE.COM", "bob@EXAMPLE.COM"}


def _write(path: Path, text: str, mtime_ns: int) -> None:
    path.write_text(text)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_file_is_reread_when_it_changes_but_looked_at_at_most_once_a_second(
    tmp_path: Path,
) -> None:
    path, clock = tmp_path / "allow", Clock()
    _write(path, "alice@R\n", 1_000_000_000)
    listed = PrincipalFile(str(path), clock=clock)
    assert listed.names() == frozenset({"alice@R"})
    _write(path, "alice@R\nbob@R\n", 2_000_000_000)
    clock.now += 0.5
    assert listed.names() == frozenset({"alice@R"}), "within a second: the cached list"
    clock.now += 0.6
    assert listed.names() == frozenset({"alice@R", "bob@R"})


def test_unreadable_list_fails_closed(tmp_path: Path) -> None:
    path, clock = tmp_path / "allow", Clock()
    _write(path, "alice@R\n", 1_000_000_000)
    policy = PrincipalPolicy(allow=PrincipalFile(str(path), clock=clock))
    assert policy.refusal("alice@R") is None
    path.unlink()
    clock.now += 2
    assert policy.refusal("alice@R") == "allow list unreadable"
    with pytest.raises(ListUnreadable):
        PrincipalFile(str(tmp_path / "missing")).load()


def test_deny_wins_and_names_are_compared_whole(tmp_path: Path) -> None:
    (tmp_path / "allow").write_text("alice@R\nbob@R\nmallory\n")
    (tmp_path / "deny").write_text("bob@R\n")
    policy = PrincipalPolicy(
        allow=PrincipalFile(str(tmp_path / "allow")), deny=PrincipalFile(str(tmp_path / "deny"))
    )
    assert policy.refusal("alice@R") is None
    assert policy.refusal("bob@R") == "principal on the deny list"
    assert policy.refusal("carol@R") == "principal not on the allow list"
    # distccd cuts the realm off; we do not, so no other realm's alice gets in.
    assert policy.refusal("alice@OTHER") == "principal not on the allow list"
    assert policy.refusal("mallory@R") == "principal not on the allow list"


def test_without_lists_every_authenticated_principal_may_compile() -> None:
    assert PrincipalPolicy().refusal("anyone@R") is None


def test_anonymous_principals_never_compile(tmp_path: Path) -> None:
    (tmp_path / "allow").write_text("WELLKNOWN/ANONYMOUS@WELLKNOWN:ANONYMOUS\n")
    anonymous = "WELLKNOWN/ANONYMOUS@WELLKNOWN:ANONYMOUS"
    assert PrincipalPolicy().refusal(anonymous) == "anonymous principals may not compile"
    listed = PrincipalPolicy(allow=PrincipalFile(str(tmp_path / "allow")))
    assert listed.refusal(anonymous) == "anonymous principals may not compile"
    assert PrincipalPolicy().refusal("WELLKNOWN/ANONYMOUS@R") is not None


def test_the_deny_list_errs_on_the_side_of_refusing(tmp_path: Path) -> None:
    # A BOM, a realm-less entry (distccd's style) and another spelling of a name.
    (tmp_path / "deny").write_bytes("\ufeffmallory@R\neve\n".encode())
    policy = PrincipalPolicy(deny=PrincipalFile(str(tmp_path / "deny")))
    denied = "principal on the deny list"
    assert policy.refusal("mallory@R") == denied  # the first line, behind the BOM
    assert policy.refusal("MALLORY@R") == denied  # another spelling from the KDC
    assert policy.refusal("eve@R") == denied and policy.refusal("eve@OTHER") == denied
    assert policy.refusal("mallory@OTHER") is None  # a realm given is a realm meant
    assert policy.refusal("evelyn@R") is None  # whole names only


def test_backend_spec_auth_option_as_distccs_host_word() -> None:
    assert BackendSpec.parse("10.0.0.1:3632").auth is None
    plain = BackendSpec.parse("10.0.0.1:3632,auth")
    assert plain.auth is not None and plain.auth.server_name is None
    named = BackendSpec.parse("10.0.0.1:3632,auth=build1.example.com,status=3633")
    assert named.auth is not None and named.auth.server_name == "build1.example.com"
    with pytest.raises(SpecError):
        BackendSpec.parse("10.0.0.1:3632,auth=")


def test_balancer_settings_reach_every_authenticated_backend(tmp_path: Path) -> None:
    keytab = tmp_path / "client.keytab"
    keytab.write_bytes(b"")
    config = BalancerConfig(
        backend=["10.0.0.1:3632,auth=b1.example.com", "10.0.0.2:3632"],
        client_keytab=str(keytab),
        backend_service="distcc",
    )
    first, second = config.backend_specs()
    assert second.auth is None
    assert first.auth is not None
    assert (first.auth.service, first.auth.server_name) == ("distcc", "b1.example.com")
    assert first.auth.client_keytab == str(keytab)
    config.backend_auth = True
    assert all(spec.auth is not None for spec in config.backend_specs())


def test_a_backend_given_by_name_is_authenticated_as_that_name() -> None:
    config = BalancerConfig(
        backend=["build2.example.com:3632,auth", "10.0.0.3:3632,auth", "b4:3632,auth=b4.x"]
    )
    names = [spec.auth.server_name for spec in config.backend_specs() if spec.auth]
    # A name is used as it is; an address is left to reverse DNS (distcc's way).
    assert names == ["build2.example.com", None, "b4.x"]


def test_committers_script_builds_a_list_the_servers_read(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[3] / "configs/auth/principals-from-committers.sh"
    names = "alice\nBob\n# a comment\nevil@OTHER.REALM\nx y\n\n"
    result = subprocess.run(
        ["sh", str(script), "-r", "EXAMPLE.COM", "-b", "distlb-balancer/vip@EXAMPLE.COM"],
        input=names, capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    assert parse_principals(result.stdout) == {
        "alice@EXAMPLE.COM",
        "bob@EXAMPLE.COM",
        "distlb-balancer/vip@EXAMPLE.COM",
    }
