"""The job limits as a sandboxed job gets them: ``prlimit``'s bounds and the job
shell's process bound, read back from ``/proc/self/limits`` as the server's start
check reads them."""

from __future__ import annotations

import subprocess

import pytest

from server.sandbox.check import parse_limits
from server.sandbox.launcher import PRLIMIT, SHELL, JobLimits, child_env

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
def test_prlimit_and_the_shell_set_each_limit_as_asked(limits: JobLimits) -> None:
    command = [PRLIMIT, *limits.prlimit_args(nproc=None), "--", SHELL, "-c",
               f"ulimit -p {limits.processes} && exec cat /proc/self/limits"]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True)
    found = parse_limits(out.stdout)
    for name, want in limits.expected().items():
        assert found[name] == (want, want), name


def test_limits_are_parsed_by_name_with_unlimited_as_none() -> None:
    text = (
        "Limit                     Soft Limit           Hard Limit           Units     \n"
        "Max cpu time              unlimited            unlimited            seconds   \n"
        "Max file size             1048576              2097152              bytes     \n"
    )
    assert parse_limits(text) == {"Max cpu time": (None, None),
                                  "Max file size": (1048576, 2097152)}  # fmt: skip


def test_a_refused_user_namespace_is_named_with_what_to_check() -> None:
    from server.sandbox.check import sandbox_hint

    bwrap_said = (
        "bwrap: No permissions to create new namespace, likely because the kernel does not "
        "allow non-privileged user namespaces."
    )
    hint = sandbox_hint(bwrap_said)
    assert "unprivileged user namespaces" in hint and "user.max_user_namespaces" in hint
    assert "--sandbox none" in hint
    assert "user namespaces" not in sandbox_hint("bwrap: Can't mount proc on /newroot/proc")


def test_the_compilers_environment_keeps_clang_from_running_its_symbolizer() -> None:
    """A source can crash clang (``#pragma clang __debug crash``), which then runs
    llvm-symbolizer unless told not to (an eleventh review): one more program a job
    would run."""
    env = child_env("/job")
    assert env["LLVM_DISABLE_SYMBOLIZATION"] == "1"
    assert env["HOME"] == env["TMPDIR"] == "/job"
