"""Run a compile under strace and say what it touched outside its job directory.

A compile job may write only in its own directory, read only that directory and the
toolchain (below), and run only the toolchain's own programs. Used by
tests/integration/test_judge_differential.py to hold every option the judge accepts
to that, with the real gcc, g++, clang and GNU as.

What a compile may read besides its job, and why each is needed (narrow on purpose:
no /usr/include, no /etc beyond the loader's cache, no /home, /tmp or /var):
- ``/usr/lib/``, ``/lib/``, ``/lib64/``, ``/usr/lib64/``: the compilers' own trees
  (/usr/lib/gcc, /usr/lib/llvm-*), shared libraries, gconv modules and the locale
  archive; Debian's /lib is /usr/lib;
- ``/usr/bin/``: the programs themselves (clang finds its tree from /usr/bin/..);
- ``/usr/share/locale/``: message catalogs (gcc's diagnostics are translated);
- ``/etc/ld.so.cache`` and ``/etc/ld.so.preload``: the dynamic loader;
- ``/dev/null``;
- the judge's trusted specs directories (a specs file is a path the judge checks:
  root's, under ``--trusted-specs-dir``), when the caller passes them;
- whatever the same tool reads compiling the same source with no option at all (its
  *baseline*: clang reads /etc/os-release and /etc/debian_version to know the
  distribution, and looks for CUDA and ROCm installs in /usr/local/cuda and /opt),
  which no client chose.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

TRACED_CALLS = (
    "openat,open,creat,execve,execveat,rename,renameat,renameat2,unlink,unlinkat,"
    "mkdir,mkdirat,link,linkat,symlink,symlinkat"
)
READABLE_DIRS = ("/usr/lib/", "/lib/", "/lib64/", "/usr/lib64/", "/usr/bin/", "/usr/share/locale/")
READABLE_FILES = frozenset({"/etc/ld.so.cache", "/etc/ld.so.preload", "/dev/null"})
WRITABLE_FILES = frozenset({"/dev/null"})

_CALL = re.compile(r"^(\w+)\((.*)\)\s+=\s+(-?\d+|\?)")
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
_DIRFD = re.compile(r"^(?:AT_FDCWD|\d+)<([^>]*)>,")
_WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_APPEND")


@dataclass(frozen=True)
class Access:
    """One traced call: what it named, whether it writes, whether it succeeded."""

    call: str
    path: str
    """Absolute and normalised (a relative name is taken from the directory it was
    looked up in, which strace shows)."""
    writes: bool
    succeeded: bool

    def __str__(self) -> str:
        how = "execs" if self.call.startswith("execve") else "writes" if self.writes else "reads"
        return f"{how} {self.path} ({self.call}{'' if self.succeeded else ', failed'})"


def _accesses(line: str, cwd: str) -> list[Access]:
    match = _CALL.match(line)
    if match is None:
        return []
    call, args, result = match.groups()
    succeeded = result != "?" and int(result) >= 0
    strings = [s.encode().decode("unicode_escape") for s in _STRING.findall(args)]
    if not strings:
        return []
    dirfd = _DIRFD.match(args)  # (-y shows the directory an *at call looks in)
    base = dirfd.group(1) if dirfd else cwd  # (the tools never change directory)

    def absolute(path: str) -> str:
        return os.path.normpath(os.path.join(base, path))

    if call in ("open", "openat", "creat"):
        writes = call == "creat" or any(flag in args for flag in _WRITE_FLAGS)
        return [Access(call, absolute(strings[0]), writes, succeeded)]
    if call in ("execve", "execveat"):
        return [Access(call, absolute(strings[0]), False, succeeded)]
    if call in ("symlink", "symlinkat"):  # the first is what the link says, not a file
        return [Access(call, absolute(strings[-1]), True, succeeded)]
    # rename, link (both names change or appear), unlink, mkdir
    return [Access(call, absolute(path), True, succeeded) for path in strings[:2]]


@dataclass
class Traced:
    """One traced run of a command."""

    command: list[str]
    returncode: int
    stderr: str
    accesses: list[Access] = field(default_factory=list)


def traced_run(
    command: Sequence[str], job_dir: Path, env: Mapping[str, str], timeout_s: float = 120
) -> Traced:
    """Run ``command`` in ``job_dir`` under strace, following every process it starts."""
    strace = shutil.which("strace")
    if strace is None:
        raise RuntimeError("strace is missing: run scripts/bootstrap.sh test")
    with tempfile.TemporaryDirectory(prefix="distlb-trace-") as traces:
        done = subprocess.run(
            [strace, "-f", "-ff", "-qq", "-y", "-s", "4096", "-e", f"trace={TRACED_CALLS}",
             "-o", f"{traces}/t", "--", *command],
            cwd=job_dir, env=dict(env), capture_output=True, text=True, timeout=timeout_s,
            check=False,
        )  # fmt: skip
        accesses = []
        for trace in sorted(Path(traces).iterdir()):
            for line in trace.read_text(errors="replace").splitlines():
                accesses += _accesses(line, str(job_dir))
    return Traced(list(command), done.returncode, done.stderr, accesses)


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def outside_the_job(
    run: Traced,
    job_dir: Path,
    programs: frozenset[str],
    baseline: frozenset[str],
    trusted_dirs: Sequence[str] = (),
) -> list[str]:
    """What ``run`` did that a compile job may not: each as a line. ``programs`` are the
    real paths of the toolchain's programs; ``baseline`` what the tool reads anyway;
    ``trusted_dirs`` may be read too (the judge's trusted specs directories)."""
    job = os.path.realpath(job_dir)
    found = []
    for access in run.accesses:
        path = access.path
        if access.call.startswith("execve"):
            if access.succeeded and os.path.realpath(path) not in programs:
                found.append(str(access))
        elif access.writes:
            if not _inside(path, job) and path not in WRITABLE_FILES:
                found.append(str(access))
        elif not (
            _inside(path, job)
            or path.startswith(READABLE_DIRS)
            or path in READABLE_FILES
            or path in baseline
            or any(_inside(path, directory) for directory in trusted_dirs)
        ):
            found.append(str(access))
    return sorted(set(found))
