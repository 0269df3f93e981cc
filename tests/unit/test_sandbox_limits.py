"""The job limits as the sandbox's shell sets them: dash's ``ulimit`` units, read back
from ``/proc/self/limits`` as the server's start check reads them."""

from __future__ import annotations

import subprocess

import pytest

from server.sandbox import SHELL, JobLimits
from server.sandbox_check import parse_limits

LIMITS = [
    JobLimits(),
    JobLimits(
        memory_bytes=512 * 1024 * 1024,
        file_bytes=1024 * 1024,
        processes=32,
        open_files=256,
        cpu_s=61,
    ),
    JobLimits(memory_bytes=None, cpu_s=None),
]


@pytest.mark.parametrize("limits", LIMITS)
def test_the_shell_sets_each_limit_in_bytes_as_asked(limits: JobLimits) -> None:
    script = f"{limits.ulimit_script()} && exec cat /proc/self/limits"
    out = subprocess.run([SHELL, "-c", script], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    found = parse_limits(out.stdout)
    for name, want in limits.expected().items():
        assert found[name] == (want, want), name


def test_prlimit_and_the_shell_agree() -> None:
    """--sandbox none sets the same bounds with prlimit."""
    limits = LIMITS[1]
    out = subprocess.run(["prlimit", *limits.prlimit_args(), "--", "cat", "/proc/self/limits"],
                         capture_output=True, text=True, timeout=30, check=True)  # fmt: skip
    found = parse_limits(out.stdout)
    assert {name: found[name] for name in limits.expected()} == {
        name: (want, want) for name, want in limits.expected().items()
    }


def test_limits_are_parsed_by_name_with_unlimited_as_none() -> None:
    text = (
        "Limit                     Soft Limit           Hard Limit           Units     \n"
        "Max cpu time              unlimited            unlimited            seconds   \n"
        "Max file size             1048576              2097152              bytes     \n"
    )
    assert parse_limits(text) == {"Max cpu time": (None, None),
                                   "Max file size": (1048576, 2097152)}  # fmt: skip
