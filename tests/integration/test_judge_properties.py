"""Property: built from every option spelling that gcc and clang document, with path
and program values, in joined and separate forms and nested inside the options that
carry options for other programs, no command line the judge accepts names a path
outside the job or a program, except in the few places where such a value is only a
string that no compiler opens.

The oracle below is written independently of the option table: it is the short,
reviewed list of places where a path may stand.
"""

from __future__ import annotations

import functools
import re
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.judge import Judge, Refused

pytestmark = pytest.mark.integration

HOSTILE_VALUES = [
    "/etc/passwd", "../../../etc/passwd", "|touch /tmp/distlb-pwned", "/tmp/evil.so",
    "sh,-c,touch /tmp/distlb-pwned", "-wrapper sh,-c,id", "@/etc/passwd", "[::1]:4444",
    "$(id)", "x;id", "`id`", "/", "..", "evil/../../x",
]  # fmt: skip
BENIGN_VALUES = ["2", "x", "hidden", "address", "none", "c11", "generic", "yes"]
HOSTILE_MARKERS = ("/", "|", "@", "$(", ";", "`", " ", "..")

# Where a hostile value is harmless: the compiler never opens it (macro definitions,
# include directories a preprocessed source never searches, linker options under -c,
# strings recorded in the object), or distlb replaces it (-o, the input).
STRING_PREFIXES = (
    "-D", "-U", "-I", "-isystem", "-iquote", "-idirafter", "-iprefix", "-iwithprefix",
    "-Wl,", "-l", "-L", "-u", "-fdebug-prefix-map=", "-ffile-prefix-map=",
    "-fmacro-prefix-map=", "-fprofile-prefix-map=", "-fdebug-compilation-dir",
    "-ffile-compilation-dir=", "-fcoverage-compilation-dir=", "-fprofile-instr-generate=",
    "-finstrument-functions-exclude-file-list=", "-finstrument-functions-exclude-function-list=",
    "-MT", "-MQ",
)  # fmt: skip
STRING_SEPARATE = (
    "-o", "-D", "-U", "-I", "-isystem", "-iquote", "-idirafter", "-iprefix", "-iwithprefix",
    "-iwithprefixbefore", "-MT", "-MQ", "-Xlinker", "-z", "-l", "-L", "-u",
    "-fdebug-compilation-dir",
)  # fmt: skip
NESTED_STRING = {"--defsym"}  # the assembler's symbol definitions
CARRIERS = ["-Xclang", "-mllvm", "-Xassembler", "-Xpreprocessor"]


def _run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    return done.stdout + done.stderr


@functools.cache
def documented_spellings() -> list[str]:
    """Every option stem the installed gcc and clang document (values stripped)."""
    text = _run("gcc", "--help=common,optimizers,target,warnings,c,c++,params,undocumented")
    text += _run("clang", "--help-hidden") + _run("clang", "-cc1", "-help")
    stems = set()
    for token in re.findall(r"(?:^|\s)(--?[A-Za-z][^\s\[<]*)", text, re.M):
        stem = token.rstrip(",.;")
        if len(stem) > 1:
            stems.add(stem)
    if len(stems) < 1000:
        pytest.fail(f"only {len(stems)} option spellings documented: gcc or clang missing")
    return sorted(stems)


@st.composite
def hostile_argument(draw: st.DrawFn) -> list[str]:
    spelling = draw(st.sampled_from(documented_spellings()))
    value = draw(st.sampled_from(HOSTILE_VALUES + BENIGN_VALUES))
    form = draw(st.sampled_from(["flag", "joined", "equals", "separate", "nested"]))
    if form == "flag":
        return [spelling]
    if form == "joined":
        return [spelling + value]
    if form == "equals":
        return [spelling.rstrip("=") + "=" + value]
    if form == "separate":
        return [spelling, value]
    inner = [spelling + value, value]
    how = draw(st.sampled_from(["compare-debug", "wa", "wp", "carrier"]))
    if how == "compare-debug":
        return ["-fcompare-debug=" + " ".join(inner)]
    if how == "wa":
        return ["-Wa," + ",".join(inner)]
    if how == "wp":
        return ["-Wp," + ",".join(inner)]
    carrier = draw(st.sampled_from(CARRIERS))
    return [carrier, inner[0], carrier, inner[1]]


def _hostile(text: str) -> bool:
    return any(marker in text for marker in HOSTILE_MARKERS)


def harmful_places(argv: tuple[str, ...], input_index: int) -> list[str]:
    """The arguments of an accepted command line where a hostile value stands outside
    the places the oracle allows."""
    found = []
    for i, arg in enumerate(argv[1:], 1):
        if i == input_index or not _hostile(arg):
            continue
        before = argv[i - 1]
        if arg.startswith(STRING_PREFIXES) or before in STRING_SEPARATE:
            continue
        if arg.startswith("-Wa,"):
            pieces = arg[4:].split(",")
            if all(not _hostile(p) or pieces[k - 1] in NESTED_STRING for k, p in enumerate(pieces)):
                continue
        if before in CARRIERS and i >= 3 and argv[i - 2] in NESTED_STRING:
            continue
        if before == "-Xclang" and arg.startswith("-fdebug-compilation-dir="):
            continue
        if arg.startswith("-Wp,") and arg[4:6] in ("-D", "-U"):
            continue
        if before == "-Xpreprocessor" and arg[:2] in ("-D", "-U"):
            continue
        found.append(arg)
    return found


@settings(
    max_examples=1500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(hostile_argument(), min_size=1, max_size=4), st.sampled_from(["gcc", "clang"]))
def test_accepted_command_lines_name_no_path_or_program(
    pieces: list[list[str]], compiler: str
) -> None:
    argv = [compiler, "-c", "x.c", *(arg for piece in pieces for arg in piece)]
    try:
        job = Judge().judge(argv)
    except Refused:
        return
    assert harmful_places(job.argv, job.input_index) == [], argv


def test_the_oracle_catches_what_a_denylist_missed() -> None:
    """The property can fail: each of these is what the old denylist let through."""
    for argv in (
        ("gcc", "-c", "x.c", "-fcompare-debug=-wrapper sh,-c,id"),
        ("g++", "-c", "x.cc", "-fmodule-mapper=|touch /tmp/x"),
        ("clang", "-c", "x.c", "-MJ/tmp/x"),
        ("clang", "-c", "x.c", "-mllvm", "-info-output-file=/tmp/x"),
    ):
        assert harmful_places(argv, 2), argv
