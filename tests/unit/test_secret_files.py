"""Secret files (daemon/secret_files.py) and the cache secret both daemons require with a
cache others can reach: what is refused at start, and why."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from balancer.cli import load as load_balancer
from balancer.config import ConfigError
from daemon.secret_files import acl_exposure, read_secret_file
from server.config import load as load_server
from tests.support.secrets import write_secret

USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
NOBODY = 65534
ANY = 0xFFFFFFFF


def acl(*entries: tuple[int, int, int]) -> bytes:
    """An access ACL as Linux stores it (system.posix_acl_access)."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *entry) for entry in entries)


def systemd_credential_acl(reader: int) -> bytes:
    """What LoadCredential= leaves on a root-owned 0400 file for a service run as
    ``reader``: user::r--, user:READER:r--, group::---, mask::r--, other::---."""
    return acl((USER_OBJ, 4, ANY), (USER, 4, reader), (GROUP_OBJ, 0, ANY), (MASK, 4, ANY),
               (OTHER, 0, ANY))  # fmt: skip


def test_a_private_file_is_read_without_its_trailing_newline(tmp_path: Path) -> None:
    path = write_secret(tmp_path / "s", b"a" * 40 + b"\n")
    assert read_secret_file(str(path), "--x", min_bytes=32) == b"a" * 40


@pytest.mark.parametrize(
    ("content", "mode", "says"),
    [
        (b"a" * 40, 0o644, "others may read"),
        (b"a" * 40, 0o604, "others may read"),
        (b"a" * 40, 0o640, "its group may read"),
        (b"a" * 40, 0o620, "its group may read"),
        (b"", 0o600, "empty"),
        (b" \n\n", 0o600, "empty"),
        (b"a" * 31 + b"\n", 0o600, "31 bytes, at least 32"),
        (b"a" * 5000, 0o600, "longer than 4096"),
    ],
)
def test_a_file_that_is_no_secret_is_refused_with_the_reason(
    tmp_path: Path, content: bytes, mode: int, says: str
) -> None:
    path = write_secret(tmp_path / "s", content, mode)
    with pytest.raises(ConfigError, match=says) as refused:
        read_secret_file(str(path), "--cache-secret-file", min_bytes=32)
    assert str(refused.value).startswith(f"--cache-secret-file {path}: ")


def test_a_missing_file_a_directory_and_a_fifo_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read it: No such file"):
        read_secret_file(str(tmp_path / "missing"), "--x")
    (tmp_path / "dir").mkdir(mode=0o700)
    with pytest.raises(ConfigError, match="not a regular file"):
        read_secret_file(str(tmp_path / "dir"), "--x")
    os.mkfifo(tmp_path / "fifo", 0o600)
    with pytest.raises(ConfigError, match="not a regular file"):  # (and no hang)
        read_secret_file(str(tmp_path / "fifo"), "--x")


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_file_another_user_owns_is_refused(tmp_path: Path) -> None:
    path = write_secret(tmp_path / "s")
    os.chown(path, NOBODY, NOBODY)
    with pytest.raises(ConfigError, match=f"owned by uid {NOBODY}"):
        read_secret_file(str(path), "--x")


def test_acls_expose_a_file_unless_only_this_user_may_read() -> None:
    me = 1000
    assert acl_exposure(systemd_credential_acl(me), me) is None
    assert "uid 1001" in str(acl_exposure(systemd_credential_acl(1001), me))
    group = acl((USER_OBJ, 6, ANY), (GROUP_OBJ, 4, ANY), (MASK, 4, ANY), (OTHER, 0, ANY))
    assert "its group" in str(acl_exposure(group, me))
    named_group = acl((USER_OBJ, 6, ANY), (GROUP_OBJ, 0, ANY), (GROUP, 4, 50), (MASK, 4, ANY),
                      (OTHER, 0, ANY))  # fmt: skip
    assert "gid 50" in str(acl_exposure(named_group, me))
    masked = acl((USER_OBJ, 6, ANY), (USER, 4, 1001), (GROUP_OBJ, 0, ANY), (MASK, 0, ANY),
                 (OTHER, 0, ANY))  # fmt: skip
    assert acl_exposure(masked, me) is None  # (the mask takes uid 1001's read away)
    assert acl_exposure(b"\x02\x00", me) is not None  # unreadable: not trusted
    assert acl_exposure(struct.pack("<I", 3), me) is not None


def test_a_systemd_credential_with_its_acl_is_accepted(tmp_path: Path) -> None:
    """LoadCredential= hands over a root-owned 0400 file whose ACL lets the service's
    user read it; stat shows the ACL's mask as group bits (0440)."""
    path = write_secret(tmp_path / "credential", mode=0o400)
    try:
        os.setxattr(path, "system.posix_acl_access", systemd_credential_acl(os.geteuid()))
    except OSError as exc:
        pytest.fail(f"this test needs a file system with POSIX ACLs under {tmp_path}: {exc}")
    assert path.stat().st_mode & 0o777 == 0o440
    assert len(read_secret_file(str(path), "--x", min_bytes=32)) == 64
    os.setxattr(path, "system.posix_acl_access", systemd_credential_acl(NOBODY))
    with pytest.raises(ConfigError, match=f"its ACL lets uid {NOBODY} read"):
        read_secret_file(str(path), "--x")


BALANCER = ["--backend", "127.0.0.1:3632"]


def test_a_shared_cache_without_a_secret_stops_either_daemon(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--cache-redis needs --cache-secret-file FILE"):
        load_balancer([*BALANCER, "--cache-redis", "redis://127.0.0.1:6379/0"])
    with pytest.raises(ConfigError, match="--cache-dir needs --cache-secret-file FILE"):
        load_server(["--sandbox", "none", "--cache-dir", str(tmp_path / "c")])


def test_a_bad_secret_stops_either_daemon_even_without_a_cache(tmp_path: Path) -> None:
    short = str(write_secret(tmp_path / "short", b"x" * 16))
    with pytest.raises(ConfigError, match=r"--cache-secret-file .*16 bytes"):
        load_balancer([*BALANCER, "--cache-redis", "redis://h:6379/0", "--cache-secret-file",
                       short])  # fmt: skip
    with pytest.raises(ConfigError, match=r"--cache-secret-file .*16 bytes"):
        load_server(["--sandbox", "none", "--cache-secret-file", short])


def test_a_memory_cache_alone_needs_no_secret(tmp_path: Path) -> None:
    config = load_balancer([*BALANCER, "--cache-memory-mb", "8"])
    assert config.result_cache() is not None
    secret = str(write_secret(tmp_path / "s"))
    server = load_server(["--sandbox", "none", "--cache-dir", str(tmp_path / "c"),
                          "--cache-secret-file", secret])  # fmt: skip
    assert server.result_cache() is not None


def test_the_redis_password_comes_from_its_file_and_only_from_there(tmp_path: Path) -> None:
    secret = str(write_secret(tmp_path / "s"))
    password = str(write_secret(tmp_path / "pw", b"hunter2-but-longer\n"))
    config = load_balancer([*BALANCER, "--cache-redis", "redis://distlb@h:6379/0",
                            "--cache-secret-file", secret,
                            "--cache-redis-password-file", password])  # fmt: skip
    assert config.redis_password() == "hunter2-but-longer"
    with pytest.raises(ConfigError, match="keep it in the file only"):
        load_balancer([*BALANCER, "--cache-redis", "redis://:inline@h:6379/0",
                       "--cache-secret-file", secret,
                       "--cache-redis-password-file", password])  # fmt: skip
    with pytest.raises(ConfigError, match=r"--cache-redis-password-file .*others may read"):
        load_balancer([*BALANCER, "--cache-redis", "redis://h:6379/0", "--cache-secret-file",
                       secret, "--cache-redis-password-file",
                       str(write_secret(tmp_path / "open", b"pw", 0o644))])  # fmt: skip
