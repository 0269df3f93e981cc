"""The system headers' fingerprint (server/pump_headers.py): by content, remembered by
stat, through links that leave the directories, and a watch that tells a change."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from server.pump_headers import DigestMemo, HeadersWatch, headers_fingerprint, headers_of


def _tree(root: Path) -> Path:
    (root / "sys").mkdir(parents=True)
    (root / "sys" / "a.h").write_text("#define A 1\n")
    (root / "b.h").write_text("#define B 1\n")
    return root


def _same_stat_edit(path: Path, text: str) -> None:
    before = path.stat()
    assert len(text) == before.st_size
    path.write_text(text)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_an_edit_that_keeps_size_and_times_changes_the_fingerprint(tmp_path: Path) -> None:
    root = _tree(tmp_path / "inc")
    first = headers_fingerprint([str(root)], DigestMemo(None))
    _same_stat_edit(root / "sys" / "a.h", "#define A 2\n")
    assert headers_fingerprint([str(root)], DigestMemo(None)) != first


def test_servers_with_the_same_headers_agree_whatever_their_times(tmp_path: Path) -> None:
    one, two = _tree(tmp_path / "one" / "inc"), _tree(tmp_path / "two" / "inc")
    os.utime(two / "b.h", (1, 1))
    # (the same paths on two machines: each tree fingerprinted under one name)
    os.rename(one, tmp_path / "inc")
    first = headers_fingerprint([str(tmp_path / "inc")], DigestMemo(None))
    os.rename(tmp_path / "inc", one)
    os.rename(two, tmp_path / "inc")
    assert headers_fingerprint([str(tmp_path / "inc")], DigestMemo(None)) == first


def test_a_link_counts_by_its_target_and_is_not_followed(tmp_path: Path) -> None:
    """(A link out of the directories names nothing in a sealed pump sandbox, which holds
    only them and the toolchain; one to / would have the walk read /proc: a review.)"""
    root = _tree(tmp_path / "inc")
    (root / "all").symlink_to("/")
    (root / "c.h").symlink_to("b.h")
    first = headers_fingerprint([str(root)], DigestMemo(None))
    (root / "c.h").unlink()
    (root / "c.h").symlink_to("sys/a.h")
    assert headers_fingerprint([str(root)], DigestMemo(None)) != first


def test_a_memo_that_cannot_be_read_is_not_used(tmp_path: Path) -> None:
    path = tmp_path / "memo.json"
    for text in ("[" * 200_000 + "]" * 200_000, "{", '{"version": 1, "files": 3}'):
        path.write_text(text)
        path.chmod(0o600)
        assert DigestMemo(str(path)).load().known == {}


def test_the_memo_reads_a_file_again_only_when_its_stat_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("server.pump_headers.SETTLED_NS", -(10**18))  # (all settled)
    root = _tree(tmp_path / "inc")
    path = tmp_path / "cache" / "distlb-server" / "header-digests.json"
    memo = DigestMemo(str(path)).load()
    fingerprints, _ = headers_of({"gcc": {"pump": str(root)}}, memo)
    assert memo.hashed == 0 and path.stat().st_mode & 0o077 == 0  # (saved, and reset)
    again = DigestMemo(str(path)).load()
    assert len(again.known) == 2
    assert headers_fingerprint([str(root)], again) == fingerprints["gcc"] and again.hashed == 0
    _same_stat_edit(root / "b.h", "#define B 2\n")  # (its change time moved)
    changed = headers_fingerprint([str(root)], again)
    assert again.hashed == 1 and changed != fingerprints["gcc"]
    again.save()
    (root / "sys" / "a.h").unlink()  # (a file gone is forgotten at the next read)
    headers_fingerprint([str(root)], again)
    again.save()
    assert sorted(DigestMemo(str(path)).load().known) == [str(root / "b.h")]


def test_a_memo_anyone_else_could_have_written_is_not_used(tmp_path: Path) -> None:
    root = _tree(tmp_path / "inc")
    path = tmp_path / "memo.json"
    a = root / "b.h"
    info = a.stat()
    forged = {"version": 1, "files": {str(a): [[info.st_dev, info.st_ino, info.st_size,
              info.st_mtime_ns, info.st_ctime_ns], "0" * 64]}}  # fmt: skip
    path.write_text(json.dumps(forged))
    path.chmod(0o666)
    assert DigestMemo(str(path)).load().known == {}
    path.chmod(0o600)
    assert DigestMemo(str(path)).load().known  # (the same file, the server's own: used)


def test_the_watch_tells_a_change_under_any_directory_it_read(tmp_path: Path) -> None:
    root = _tree(tmp_path / "inc")
    fingerprints, watch = headers_of({"gcc": {"pump": str(root)}}, DigestMemo(None))
    assert fingerprints["gcc"] and watch.ok
    assert not watch.changed()
    (root / "sys" / "new.h").write_text("")
    assert watch.changed() and watch.changed()  # (and stays so)
    _, watch = headers_of({"gcc": {"pump": str(root)}}, DigestMemo(None))
    assert not watch.changed()
    _same_stat_edit(root / "sys" / "a.h", "#define A 3\n")
    assert watch.changed()


def test_headers_that_cannot_be_watched_report_no_fingerprint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _tree(tmp_path / "inc")

    def failing(self: HeadersWatch, directory: str) -> None:
        self.ok, self.reason = False, f"{directory}: No space left on device"

    monkeypatch.setattr(HeadersWatch, "add", failing)
    fingerprints, watch = headers_of({"gcc": {"pump": str(root)}}, DigestMemo(None))
    assert fingerprints == {"gcc": ""} and not watch.changed()
