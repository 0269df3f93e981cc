"""Verdicts remembered by shape (daemon/verdicts.py, daemon/judge.py): a command line
that differs from one accepted before only in its source and output names has only its
names judged. The property: whatever the judge remembers, its verdict on any command
line is the full judge's (the same job, or a refusal for the same reason)."""

from __future__ import annotations

import tracemalloc
from collections.abc import Sequence
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.canonical import Job
from daemon.judge import Judge, Refused
from daemon.verdicts import MAX_SHAPE_ARGS, MAX_SHAPE_CHARS, MAX_VERDICTS, shape_of
from tests.support.distccd_reading import HOSTILE_ARGUMENTS, option_pieces

COMPILERS = {"gcc": "/usr/bin/gcc", "clang": "/usr/bin/clang"}
ALIKE = st.sampled_from(("a.c", "b.c", "a.o", "b.o", "a", "b", "", "-a", "-ob", "@a", "a.i"))
"""Few names, many alike in the facts the shape keeps: remembered shapes get hit."""
NAMES = st.one_of(
    ALIKE,
    st.sampled_from((
        "a.c", "b.cc", "c.o", "d.i", "e.ii", "f.mm", "g.s", "h.S", "x.c.o", "y.o.c", ".c",
        "a.", "", "-", "--", "-o", "-ox.o", "-Dx.c", "@f", "@f.c", "a\0.c", "dir/x.c",
        "/abs/x.c", "../up.c", "a b.c", "x.C", "x.cpp", "x.m", "x.h", "x.gch", "-c",
        *HOSTILE_ARGUMENTS,
    )),
    st.text(alphabet="ab.-oc/@,=iS\0x ", max_size=8),
)  # fmt: skip


def _verdict(judge: Judge, argv: Sequence[str]) -> Job | str:
    try:
        return judge.judge(argv)
    except Refused as exc:
        return f"refused: {exc}"


SETTINGS: list[dict[str, Any]] = [
    {"compilers": COMPILERS},  # a server's
    {},  # a balancer's: any compiler-shaped name (its backends judge the name again)
    {"compilers": COMPILERS, "allow_options": ["-o*", "-x*", "-W*", "-DX"]},  # an operator's
]


def _full(setting: int, argv: Sequence[str]) -> Job | str:
    """The verdict of a judge that remembers no command line."""
    try:
        return Judge(**SETTINGS[setting])._judge_anew(argv)[0]
    except Refused as exc:
        return f"refused: {exc}"


REMEMBERING = [Judge(**setting) for setting in SETTINGS]
"""Shared by every example: what one remembers of one must never change another's."""


@st.composite
def builds(draw: st.DrawFn) -> list[list[str]]:
    """Command lines of one build: the same options, in the same order, with a source
    and ``-o`` output (or now and then another name) put in, for several files."""
    pieces = draw(option_pieces())
    pieces += [["-c"], ["\0in"], ["-o", "\0out"]]
    order = [arg for piece in draw(st.permutations(pieces)) for arg in piece]
    compiler = draw(st.sampled_from(("gcc", "clang", "/usr/bin/gcc", "cc")))
    files = draw(st.lists(st.tuples(NAMES, NAMES), min_size=2, max_size=10))
    lines = [["gcc", *order]]
    lines[0] = [compiler, *(("a.c" if a == "\0in" else "a.o" if a == "\0out" else a)
                            for a in order)]  # fmt: skip
    for source, output in files:
        lines.append([compiler, *((source if a == "\0in" else output if a == "\0out" else a)
                                  for a in order)])  # fmt: skip
    return lines


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(builds(), st.integers(0, len(SETTINGS) - 1))
def test_a_remembered_verdict_is_always_the_full_judges(
    lines: list[list[str]], setting: int
) -> None:
    for argv in lines:
        assert _verdict(REMEMBERING[setting], argv) == _full(setting, argv), argv


def test_a_builds_next_file_is_judged_by_its_names_alone() -> None:
    judge = Judge(compilers=COMPILERS)
    first = judge.judge(["gcc", "-O2", "-Wall", "-c", "a.c", "-o", "a.o"])
    anew = judge._judge_anew
    judge._judge_anew = None  # type: ignore[assignment]  # (a full judging would fail)
    second = judge.judge(["gcc", "-O2", "-Wall", "-c", "b.c", "-o", "obj/b.o"])
    assert second.argv == tuple("b.c" if a == "a.c" else a for a in first.argv)
    assert second.input_name == "b.c"
    # A name the full judge refuses is judged anew, for the full judge's own reason.
    judge._judge_anew = anew  # type: ignore[method-assign]
    for source, output in (("@b.c", "b.o"), ("b.c", "@b.o"), ("b.c", "")):
        argv = ["gcc", "-O2", "-Wall", "-c", source, "-o", output]
        assert _verdict(judge, argv) == _full(0, argv)
        assert isinstance(_full(0, argv), str)


def test_what_is_never_remembered() -> None:
    # A third argument that is not an option (a separate value: -MF deps.d), a specs
    # file (judged by the disk as it is now), no -o, or a long command line.
    assert shape_of(["gcc", "-c", "a.c", "-MF", "a.d", "-o", "a.o"]) is None
    assert shape_of(["gcc", "-specs=x.specs", "-c", "a.c", "-o", "a.o"]) is None
    assert shape_of(["gcc", "-c", "a.c"]) is None
    assert shape_of(["gcc", "-c", "a.c", "-o", "a.o", "-D" + "x" * MAX_SHAPE_CHARS]) is None
    assert shape_of(["gcc", "-c", "a.c", "-o", "a.o", "-o", "b.o"]) is None
    judge = Judge(compilers=COMPILERS)
    # A refusal is not remembered.
    argv = ["gcc", "-fplugin=x.so", "-c", "a.c", "-o", "a.o"]
    assert isinstance(_verdict(judge, argv), str)
    assert judge._verdicts.get(shape_of(argv)) is None  # type: ignore[arg-type]


def test_a_command_line_that_reads_the_disk_is_never_remembered() -> None:
    judge = Judge(compilers=COMPILERS, specs_check=lambda _path: None)  # (any specs file)
    argv = ["gcc", "-specs=x.specs", "-c", "a.c", "-o", "a.o"]
    judge.judge(argv)  # accepted, as this specs check says today
    assert judge._verdicts.chars() == 0


def test_the_memory_is_bounded() -> None:
    judge = Judge(compilers=COMPILERS)
    for i in range(MAX_VERDICTS + 10):
        judge.judge(["gcc", f"-DN{i}", "-c", "a.c", "-o", "a.o"])
    assert len(judge._verdicts._by_shape) <= MAX_VERDICTS
    assert judge.remembered_chars() < MAX_VERDICTS * MAX_SHAPE_CHARS
    assert shape_of(["gcc", *["-c"] * MAX_SHAPE_ARGS, "a.c", "-o", "a.o"]) is None


def test_the_memory_counted_is_about_the_memory_held() -> None:
    """The worst lines to remember: as many short arguments as a shape may have (review
    27: counted by characters alone, 4.2 MB was counted while 140 MB was held)."""
    judge = Judge(compilers=COMPILERS)
    many = ["-c"] * (MAX_SHAPE_ARGS - 5)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(MAX_VERDICTS):
            judge.judge(["gcc", f"-DN{i}", *many, "a.c", "-o", "a.o"])
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(judge._verdicts._by_shape) == MAX_VERDICTS
    assert held <= 2 * judge.remembered_chars(), (held, judge.remembered_chars())
