"""Removing a job's directory: however deep, never through a link it planted."""

from __future__ import annotations

import os
from pathlib import Path

from server.output import JobDirs, remove_tree


def test_a_tree_3000_levels_deep_is_removed(tmp_path: Path) -> None:
    top = tmp_path / "job"
    top.mkdir()
    fd = os.open(top, os.O_RDONLY)
    try:
        for _ in range(3000):  # (relative to a descriptor: the path is far past PATH_MAX)
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = child
        os.close(os.open("leaf", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
    finally:
        os.close(fd)
    remove_tree(str(top))
    assert not top.exists()


def test_links_are_removed_not_followed_and_closed_directories_opened(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("mine")
    top = tmp_path / "job"
    (top / "a" / "b").mkdir(parents=True)
    (top / "a" / "b" / "f").write_text("x")
    (top / "link-to-dir").symlink_to(outside)
    (top / "a" / "link-to-file").symlink_to(outside / "keep")
    (top / "a").chmod(0)
    dirs = JobDirs()
    assert dirs.remove(str(top))
    assert not top.exists()
    assert (outside / "keep").read_text() == "mine"
    assert dirs.snapshot() == {"left": 0}


def test_a_directory_that_cannot_be_removed_is_counted(tmp_path: Path) -> None:
    dirs = JobDirs()
    assert dirs.remove(str(tmp_path / "gone"))  # nothing to do
    (tmp_path / "file").write_text("x")
    assert dirs.remove(str(tmp_path / "file")) is False  # not a directory
    assert dirs.snapshot() == {"left": 1}
