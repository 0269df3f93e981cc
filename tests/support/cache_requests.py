"""Compile requests for the cache key's property tests (tests/unit/test_cache_key_properties.py,
tests/integration/test_cache_keys_gcc.py): a request's parts, strategies for each, and
what the key and a server make of an accepted one."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from hypothesis import assume
from hypothesis import strategies as st

from cache import CompilerIdentity, cache_key, job_digest
from daemon.judge import Job, Judge, Refused

SUFFIXES = (".c", ".i", ".cc", ".cpp", ".cxx", ".cp", ".c++", ".C", ".ii", ".m", ".mi", ".mm",
            ".M", ".mii")  # fmt: skip
LANGUAGES: tuple[tuple[str, ...], ...] = (
    (), ("-x", "c"), ("-xc",), ("-x", "c++"), ("-xc++",), ("-x", "cpp-output"),
    ("-x", "c++-cpp-output"), ("-x", "objective-c"), ("-x", "none"),
)  # fmt: skip
TEXTS = (b'# 0 "t.c"\nint n = 1;\n', b'# 0 "t.c"\nint n = 2;\n',
         b'# 0 "t.c"\nint n = sizeof(\'a\');\n', b"int n = sizeof('a');\n")  # fmt: skip
"""Preprocessed texts: what two defines expanded to, one that C and C++ read apart, and
one without line markers."""
JUDGE = Judge()


@dataclass(frozen=True)
class Request:
    compiler: str = "gcc"
    optimize: str = ""
    debug: str = ""
    language: tuple[str, ...] = ()
    language_after_input: bool = False
    mode: str = "-c"
    directory: str = ""
    stem: str = "a"
    suffix: str = ".c"
    output: tuple[str, ...] = ()
    text: bytes = TEXTS[0]
    protocol: int = 1

    def argv(self) -> list[str]:
        flags = [f for f in (self.optimize, self.debug) if f]
        before, after = (((), self.language) if self.language_after_input
                         else (self.language, ()))  # fmt: skip
        name = self.directory + self.stem + self.suffix
        return [self.compiler, *flags, *before, self.mode, name, *after, *self.output]


FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "compiler": st.sampled_from(["gcc", "/usr/bin/gcc", "cc", "g++"]),
    "optimize": st.sampled_from(["", "-O0", "-O1", "-O2", "-O3", "-Os"]),
    "debug": st.sampled_from(["", "-g", "-g0", "-g1", "-g3", "-gdwarf-4"]),
    "language": st.sampled_from(LANGUAGES),
    "language_after_input": st.booleans(),
    "mode": st.sampled_from(["-c", "-S"]),
    "directory": st.sampled_from(["", "src/", "/home/bob/proj/", "dir.c/"]),
    "stem": st.sampled_from(["a", "main", "x.y"]),
    "suffix": st.sampled_from(SUFFIXES),
    "output": st.sampled_from([(), ("-o", "a.o"), ("-oobj/b.o",), ("-o", "/tmp/x.s")]),
    "text": st.sampled_from(TEXTS),
    "protocol": st.sampled_from([1, 2]),
}


@st.composite
def pairs(draw: st.DrawFn) -> tuple[Request, Request]:
    """A request and a variant that differs in a few of its parts (often in none), so
    that pairs which only just differ, or only just agree, are common."""
    return vary(draw, FIELDS, sorted(FIELDS), max_varied=3)


def vary(
    draw: st.DrawFn,
    fields: dict[str, st.SearchStrategy[Any]],
    names: list[str],
    min_varied: int = 0,
    max_varied: int | None = None,
) -> tuple[Request, Request]:
    """A request drawn from ``fields``, and one with some of ``names`` drawn again."""
    base: dict[str, Any] = {name: draw(strategy) for name, strategy in fields.items()}
    varied = draw(st.sets(st.sampled_from(names), min_size=min_varied, max_size=max_varied))
    again: dict[str, Any] = {name: draw(fields[name]) for name in varied}
    return Request(**base), replace(Request(**base), **again)


def accepted(request: Request) -> Job:
    try:
        return JUDGE.judge(request.argv())
    except Refused:
        assume(False)
        raise  # (unreachable: assume raises)


GCC12 = CompilerIdentity("gcc (Debian 12.2.0-14+deb12u1) 12.2.0", "ab" * 32)
CLANG14 = CompilerIdentity("Debian clang version 14.0.6", "cd" * 32)


def key(request: Request, job: Job, identity: CompilerIdentity = GCC12) -> str:
    """As both daemons key a job: the judge's canonical argv (server/connection.py,
    balancer/dispatch.py), under a compiler's identity (its family decides what of the
    paths may be left out)."""
    return cache_key(job_digest(request.protocol, job.argv, request.text), identity)


def compiled(request: Request, job: Job) -> tuple[tuple[str, ...], bytes]:
    """What the compiler is given on a server (server/runner.py): the command with the
    server's own input and output files, and the source."""
    command = job.command(job.compiler, f"/tmp/input{job.source_suffix}",
                          f"/tmp/output{job.output_suffix}")  # fmt: skip
    return tuple(command), request.text
