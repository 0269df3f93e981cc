"""The real compiler agrees with the key: for pairs of C and C++ jobs the key treats as
one (tests/unit/cache/test_key_properties.py has the pairs), gcc makes byte-identical
objects, even when it is given the names the key leaves out.

A server (and distccd) compiles the preprocessed source from a file of its own whose
suffix says it is preprocessed (``.i``, ``.ii``: the judge's ``source_suffix``), into a
file of its own. Here each job is compiled that way, but with the client's directory
and stem on the input and the client's ``-o`` (or gcc's default) as the output. Both
compiles of a pair run in the same directory, as every compile on a sandboxed server
does (/tmp).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from daemon.judge import Job
from server.compilers import toolchain_digest, toolchain_files
from tests.support.cache_requests import FIELDS, TEXTS, Request, accepted, key, vary

pytestmark = pytest.mark.integration

# C and C++ only: this machine's gcc has no Objective-C compiler (cc1obj).
REAL: dict[str, st.SearchStrategy[Any]] = {
    **FIELDS,
    # As the client sends them: with line markers (without, gcc records the name of the
    # file it reads, which on a server is always its own "input.i").
    "text": st.sampled_from([text for text in TEXTS if text.startswith(b"# ")]),
    "directory": st.sampled_from(["", "src/", "deep/er/", "dir.c/"]),
    "suffix": st.sampled_from([".c", ".i", ".cc", ".cpp", ".C", ".ii"]),
    "language": st.sampled_from([(), ("-x", "c"), ("-xc++",), ("-x", "c++-cpp-output")]),
    "output": st.sampled_from([(), ("-o", "a.o"), ("-oobj/b.o",), ("-o", "out.s")]),
}
DROPPED_OR_REWRITTEN = ("compiler", "directory", "stem", "output", "language")


@st.composite
def same_key_pairs(draw: st.DrawFn) -> tuple[Request, Request]:
    """A request and a variant in what the key leaves out or the judge rewrites."""
    return vary(draw, REAL, list(DROPPED_OR_REWRITTEN), min_varied=1)


def gcc_object(request: Request, job: Job, workdir: Path) -> bytes:
    """The object (or assembly) gcc makes of ``job`` as a server would, but with the
    input named by the client's directory and stem and the output by the client."""
    scratch = workdir / "job"
    shutil.rmtree(scratch, ignore_errors=True)
    (scratch / "obj").mkdir(parents=True)
    source = scratch / (os.path.splitext(job.input_name)[0] + job.source_suffix)
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(request.text)
    output = scratch / job.output_name
    command = job.command(job.compiler, str(source.relative_to(scratch)), job.output_name)
    result = subprocess.run(command, cwd=scratch, capture_output=True, timeout=60, check=False)
    assert result.returncode == 0, (command, result.stderr)
    return output.read_bytes()


MOVED = (Request(debug="-g", directory="src/", output=("-o", "a.o")),
         Request(debug="-g", directory="deep/er/", stem="main", output=("-oobj/b.o",)))  # fmt: skip
RESPELLED = (Request(compiler="/usr/bin/gcc", optimize="-O2", language=("-xc++",)),
             Request(optimize="-O2", language=("-x", "c++"), output=("-o", "a.o")))  # fmt: skip


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(same_key_pairs())
@example(MOVED)
@example(RESPELLED)
def test_jobs_sharing_a_key_make_identical_objects(
    tmp_path: Path, pair: tuple[Request, Request]
) -> None:
    a, b = pair
    job_a, job_b = accepted(a), accepted(b)
    assume(key(a, job_a) == key(b, job_b))
    assert gcc_object(a, job_a, tmp_path) == gcc_object(b, job_b, tmp_path), (a, b)


def test_the_suffix_the_key_keeps_does_change_the_object(tmp_path: Path) -> None:
    """The other side: the same text as C (.i) and as C++ (.ii) are two objects, and the
    key keeps them apart (the review's sizeof('a') program: 4 in C, 1 in C++)."""
    as_c, as_cxx = Request(suffix=".i", text=b"int n = sizeof('a');\n"), Request(suffix=".ii")
    as_cxx = replace(as_cxx, text=as_c.text)
    job_c, job_cxx = accepted(as_c), accepted(as_cxx)
    assert gcc_object(as_c, job_c, tmp_path) != gcc_object(as_cxx, job_cxx, tmp_path)
    assert key(as_c, job_c) != key(as_cxx, job_cxx)


def test_a_compilers_identity_covers_the_programs_and_libraries_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """binutils' as, gcc's cc1 and clang's libLLVM are upgraded apart from the driver:
    a server's identity for a compiler covers them (a review had two servers that
    differ only in them share entries). Another `as` first on PATH: another identity."""
    gcc_version, clang_version = _version_line("gcc"), _version_line("clang")
    gcc = {os.path.basename(f) for f in toolchain_files("/usr/bin/gcc", gcc_version)}
    assert {"cc1", "cc1plus"} <= gcc and any(f.endswith("as") for f in gcc), gcc
    assert any(f.startswith("libisl") for f in gcc), gcc
    clang = {os.path.basename(f) for f in toolchain_files("/usr/bin/clang", clang_version)}
    assert any(f.startswith("libLLVM") for f in clang), clang
    assert "as" in {f.rsplit("-", 1)[-1] for f in clang}, clang
    before = toolchain_digest("/usr/bin/gcc", gcc_version)
    assembler = tmp_path / "bin" / "as"
    assembler.parent.mkdir()
    assembler.write_text('#!/bin/sh\nexec /usr/bin/as "$@"\n')
    assembler.chmod(0o755)
    monkeypatch.setenv("PATH", f"{assembler.parent}:{os.environ['PATH']}")
    assert toolchain_digest("/usr/bin/gcc", gcc_version) != before


def _version_line(compiler: str) -> str:
    shown = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True)
    return shown.stdout.splitlines()[0]
