"""Compile requests for the cache key's property tests (tests/unit/cache/test_key_properties.py,
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
    balancer/dispatch/dispatcher.py), under a compiler's identity (its family decides what of the
    paths may be left out)."""
    return cache_key(job_digest(request.protocol, job.argv, request.text), identity)


def compiled(request: Request, job: Job) -> tuple[tuple[str, ...], bytes]:
    """What the compiler is given on a server (server/runner.py): the command with the
    server's own input and output files, and the source."""
    command = job.command(job.compiler, f"/tmp/input{job.source_suffix}",
                          f"/tmp/output{job.output_suffix}")  # fmt: skip
    return tuple(command), request.text


ROOTS = ("/home/alice/proj", "/home/carol/work/elsewhere", "/srv/b")
MAPS = ("", "-ffile-prefix-map={root}=.", "-fdebug-prefix-map={root}=/src",
        "-fmacro-prefix-map={root}=.", "-ffile-prefix-map={root}/src/a=Q")  # fmt: skip
"""None; one that sends the checkout to the same place for everyone (debug info, or
__FILE__); one that renames the main file's basename."""


@dataclass(frozen=True)
class Checkout:
    """A job from a tree checked out at ``root``, as the client preprocesses it: its
    text has line markers naming the files (absolute, or relative to ``root``), gcc's
    working-directory marker with debug info, and what ``__FILE__`` became."""

    compiler: str = "gcc"
    root: str = ROOTS[0]
    absolute: bool = True
    name: str = "a.c"
    define: int = 1
    uses_file: bool = False
    debug: str = ""
    prefix_map: str = ""
    hard: str = ""

    def main(self) -> str:
        return f"{self.root if self.absolute else '.'}/src/{self.name}".removeprefix("./")

    def maps(self) -> list[str]:
        return [self.prefix_map.format(root=self.root)] if self.prefix_map else []

    def argv(self) -> list[str]:
        flags = [f for f in (self.debug, self.hard) if f]
        return [self.compiler, "-O2", *flags, *self.maps(), "-c", self.main()]

    def _remap(self, path: str, kinds: tuple[str, ...]) -> str:
        """As gcc maps a path: the last map given of ``kinds`` that matches."""
        for option in reversed(self.maps()):
            kind, _, value = option.partition("=")
            old, _, new = value.partition("=")
            if kind in kinds and path.startswith(old):
                return new + path[len(old) :]
        return path

    def debug_info(self) -> bool:
        return self.debug not in ("", "-g0")

    def text(self) -> bytes:
        main, header = self.main(), self.main().replace(f"src/{self.name}", "include/h.h")
        cwd = f'# 1 "{self.root}//"\n' if self.debug_info() and self.compiler != "clang" else ""
        file_value = self._remap(main, ("-fmacro-prefix-map", "-ffile-prefix-map"))
        uses = f'const char *f = "{file_value}";\n' if self.uses_file else ""
        body = f'static int h;\n# 2 "{main}" 2\nint n = {self.define};\n{uses}'
        return (f'# 0 "{main}"\n{cwd}# 0 "<built-in>"\n# 1 "{main}"\n# 1 "{header}" 1\n'
                + body).encode()  # fmt: skip

    def object_records(self, share_across_dirs: bool = False) -> tuple[object, ...]:
        """What the compiler puts in the object (as the experiments in
        tests/integration/test_cache_paths_gcc.py found it): the code (language, text,
        options but the maps), the main file's basename (after gcc's debug maps), with
        debug info every path as recorded (gcc: mapped, its working directory from the
        text; clang: as it is, and the server's directory), and with an option that puts
        paths in the object, every path as it is."""
        debug_kinds = ("-fdebug-prefix-map", "-ffile-prefix-map")
        gcc = self.compiler != "clang"
        code = (self.compiler, self.debug, self.hard, self.define, self.uses_file,
                self._remap(self.main(), ("-fmacro-prefix-map", "-ffile-prefix-map"))
                if self.uses_file else None)  # fmt: skip
        named = self._remap(self.main(), debug_kinds) if gcc else self.main()
        recorded: tuple[object, ...] = (code, named.rsplit("/", 1)[-1])
        if self.hard:
            recorded += (self.main(),)
        if self.debug_info() and not share_across_dirs:
            paths = [self.main(), self.main().replace(f"src/{self.name}", "include/h.h")]
            if gcc:
                recorded += tuple(self._remap(p, debug_kinds) for p in [*paths, self.root])
            else:
                recorded += (*paths, "/tmp")
        return recorded


CHECKOUT_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "compiler": st.sampled_from(["gcc", "g++", "clang"]),
    "root": st.sampled_from(ROOTS),
    "absolute": st.booleans(),
    "name": st.sampled_from(["a.c", "b.c"]),
    "define": st.sampled_from([1, 2]),
    "uses_file": st.booleans(),
    "debug": st.sampled_from(["", "-g", "-g1", "-g0"]),
    "prefix_map": st.sampled_from(MAPS),
    "hard": st.sampled_from(["", "", "-fsanitize=address", "-flto"]),
}


@st.composite
def checkout_pairs(draw: st.DrawFn) -> tuple[Checkout, Checkout]:
    """A job and the same or a nearly same one from another checkout (the root is
    varied more often than anything else)."""
    base = {name: draw(strategy) for name, strategy in CHECKOUT_FIELDS.items()}
    varied = draw(st.sets(st.sampled_from(sorted(CHECKOUT_FIELDS)), max_size=2))
    again = {name: draw(CHECKOUT_FIELDS[name]) for name in varied}
    if draw(st.booleans()):
        again["root"] = draw(st.sampled_from(ROOTS))
    return Checkout(**base), replace(Checkout(**base), **again)


def checkout_key(request: Checkout, share_across_dirs: bool = False) -> str:
    job = JUDGE.judge(request.argv())
    identity = CLANG14 if request.compiler == "clang" else GCC12
    return cache_key(job_digest(1, job.argv, request.text(), share_across_dirs), identity)
