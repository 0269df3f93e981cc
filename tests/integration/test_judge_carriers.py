"""Property: whatever options from the table a command line carries to the assembler,
the preprocessor, clang's front end and LLVM, in whatever carriers (``-Wa,`` with its
commas, ``-Xassembler``, ``-Wp,``, ``-Xpreprocessor``, ``-Xclang``, ``-mllvm``,
``-Xclang -mllvm``), nested and split over consecutive carriers the way the drivers
join them, with @FILE and path values in every position: if the judge accepts it,
no program of the compile gets an argument that starts with '@', nor a path anywhere
but in the few places where a path is only recorded or compared.

What each program gets is tests/support/effective_argv.py, a model of the drivers that
the tests at the end check against ``gcc -###`` and ``clang -###``.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from daemon.judge import Judge, Refused
from tests.support.effective_argv import Effective, effective
from tests.support.option_samples import sample
from wire.args import Form, OptionSpec, default_table

pytestmark = pytest.mark.integration

OUTSIDE = "/distlb-outside"
"""Every hostile path value names this directory (absolute or relative to the job)."""
HOSTILE_VALUES = [
    f"@{OUTSIDE}/args", f"{OUTSIDE}/file", f"../..{OUTSIDE}/file", f"X=@{OUTSIDE}/args",
    f"X={OUTSIDE}/file", f"-alm={OUTSIDE}/listing", f"@{OUTSIDE}/args,x",
]  # fmt: skip

# Where a path may stand in what a program gets, and why it is harmless there (this
# list is the oracle, written from what the programs do, not from the table):
ASSEMBLER_PATH_AFTER = {
    "-I": "an include directory: the assembler searches it only for the source's own "
    ".include, and the source can name any absolute path itself (the sandbox stops that)",
    "--debug-prefix-map": "a prefix the assembler compares and records, never opens",
}
DEFINITION = re.compile(r"[A-Za-z_$][A-Za-z0-9_$.]*=")
"""--defsym NAME=VALUE, -D NAME=VALUE: the value is an expression or a macro's text."""
FRONT_END_PATH_OPTIONS = ("-fdebug-compilation-dir=",)  # recorded in the debug info


def _harmless(program: str, arg: str, before: str) -> bool:
    """Whether a path in ``arg`` (after ``before``) is only recorded or compared."""
    if program == "assembler":
        return before in ASSEMBLER_PATH_AFTER or (
            before == "--defsym" and bool(DEFINITION.match(arg))
        )
    if program == "front end":
        return arg.startswith(FRONT_END_PATH_OPTIONS)
    if program == "preprocessor":
        return (before in ("-D", "-U") and bool(DEFINITION.match(arg))) or (
            arg[:2] in ("-D", "-U") and bool(DEFINITION.match(arg[2:]))
        )
    return False


def unsafe_arguments(programs: Effective) -> list[str]:
    """The arguments a program gets that it would read as @FILE or as a path."""
    found = []
    for program, args in programs.programs().items():
        for i, arg in enumerate(args):
            before = args[i - 1] if i else ""
            if arg.startswith("@") or (
                "distlb-outside" in arg and not _harmless(program, arg, before)
            ):
                found.append(f"{program}: {arg}")
    return found


def _specs(context: str) -> list[OptionSpec]:
    return [s for s in default_table().specs if s.context == context and s.kind != "refuse"]


CARRIED = {context: _specs(context) for context in ("as", "cpp", "cc1", "llvm")}
DRIVER_FORWARDED = [
    s for s in _specs("driver")
    if s.spelling in ("-I", "-isystem", "-fdebug-prefix-map=", "-ffile-prefix-map=", "-D", "-MT")
]  # fmt: skip


@st.composite
def written(draw: st.DrawFn, spec: OptionSpec) -> list[str]:
    """``spec`` with a sample or hostile value, as one or two arguments of its program."""
    value = draw(st.one_of(st.just(sample(spec)), st.sampled_from(HOSTILE_VALUES)))
    if spec.form is Form.FLAG:
        return [spec.spelling]
    if spec.form is Form.FAMILY:
        return [spec.spelling + draw(st.sampled_from(["x", "x="])) + value]
    forms = {
        Form.JOINED: ["joined"], Form.SEPARATE: ["separate", "equals"],
        Form.EITHER: ["joined", "separate", "equals"],
    }[spec.form]  # fmt: skip
    form = draw(st.sampled_from(forms))
    if form == "separate":
        return [spec.spelling, value]
    if form == "equals":
        return [spec.spelling.rstrip("=") + "=" + value]
    return [spec.spelling + value]


CARRIERS = {
    "as": ("-Wa,", "-Xassembler"), "cpp": ("-Wp,", "-Xpreprocessor"),
    "cc1": ("-Xclang",), "llvm": ("-mllvm", "-Xclang -mllvm", "-mllvm="),
}  # fmt: skip


@st.composite
def carried(draw: st.DrawFn) -> list[str]:
    """Arguments for another program, each in a carrier of its own drawing; consecutive
    -Wa, (or -Wp,) pieces are sometimes merged into one argument with commas."""
    context = draw(st.sampled_from(sorted(CARRIED)))
    if draw(st.booleans()):
        args = draw(written(draw(st.sampled_from(CARRIED[context]))))
    else:  # a lone value: it joins an option carried by the arguments before it
        args = [draw(st.sampled_from(HOSTILE_VALUES))]
    out: list[str] = []
    for arg in args:
        carrier = draw(st.sampled_from(CARRIERS[context]))
        if carrier.endswith(",") and out and out[-1].startswith(carrier) and draw(st.booleans()):
            out[-1] += "," + arg
        elif carrier.endswith((",", "=")):
            out.append(carrier + arg)
        elif carrier == "-Xclang -mllvm":
            out += ["-Xclang", "-mllvm", "-Xclang", arg]
        else:
            out += [carrier, arg]
    return out


pieces_of_a_command = st.lists(
    st.one_of(carried(), carried(), st.sampled_from(DRIVER_FORWARDED).flatmap(written)),
    min_size=1,
    max_size=5,
)

JUDGE = Judge()


def _accepted(compiler: str, pieces: list[list[str]]) -> tuple[str, ...] | None:
    argv = [compiler, "-c", "x.c", "-o", "x.o", *(arg for piece in pieces for arg in piece)]
    try:
        return JUDGE.judge(argv).argv
    except Refused:
        return None


@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(pieces_of_a_command, st.sampled_from(["gcc", "clang"]))
@example([["-Wa,--defsym,@/distlb-outside/args"]], "gcc")  # the review's (issue 26)
@example([["-Wa,--defsym"], ["-Wa,@/distlb-outside/args"]], "gcc")
@example([["-Xassembler", "--defsym"], ["-Wa,@/distlb-outside/args"]], "gcc")
@example([["-I@/distlb-outside/args"]], "gcc")
@example([["-Xclang", "-mllvm", "-Xclang", "@/distlb-outside/args"]], "clang")
def test_no_accepted_command_line_gives_a_program_a_response_file_or_a_path(
    pieces: list[list[str]], compiler: str
) -> None:
    argv = _accepted(compiler, pieces)
    if argv is None:
        return
    for clang in (False, True):
        assert unsafe_arguments(effective(argv, clang=clang)) == [], argv


def test_the_oracle_finds_what_the_old_judge_let_through() -> None:
    """The property can fail: each of these was accepted before issue 26."""
    for argv in (
        ["gcc", "-c", "x.c", "-Wa,--defsym,@/distlb-outside/args"],
        ["gcc", "-c", "x.c", "-Wa,--defsym", "-Wa,@/distlb-outside/args"],
        ["gcc", "-c", "x.c", "-Xassembler", "--defsym", "-Wa,@/distlb-outside/args"],
        ["gcc", "-c", "x.c", "-I@/distlb-outside/args"],
    ):
        assert unsafe_arguments(effective(argv, clang=False)), argv


# --- the model, against the drivers ----------------------------------------------------


def _commands(command: Sequence[str]) -> dict[str, list[str]]:
    """The programs ``command -###`` would run, by name ('as', 'cc1')."""
    with tempfile.TemporaryDirectory() as job:  # clang wants its input to exist
        Path(job, "in.i").write_text("int x;\n")
        done = subprocess.run(
            [*command, "-###"], cwd=job, capture_output=True, text=True, timeout=60, check=False
        )
    found = {}
    for line in done.stderr.splitlines():
        if not line.startswith(" "):
            continue
        args = shlex.split(line)
        name = args[0].rsplit("/", 1)[-1]
        if name == "as":
            found["as"] = args
        elif name.startswith("clang") and args[1:2] == ["-cc1"]:
            found["cc1"] = args
    return found


def _in_order(part: list[str], whole: list[str]) -> bool:
    """Whether ``part`` appears in ``whole`` in order, each next item after the last."""
    position = 0
    for item in part:
        try:
            position = whole.index(item, position) + 1
        except ValueError:
            return False
    return True


def _contiguous(part: list[str], whole: list[str]) -> bool:
    return not part or any(whole[i : i + len(part)] == part for i in range(len(whole)))


def _assert_model_matches(args: list[str]) -> dict[str, dict[str, list[str]]]:
    """The model's arguments for each program are the drivers' own: the carried pieces
    just before ``-o OBJECT INPUT.s``, what the driver forwards before them, in order,
    and the front end's in one run. Returns what each driver printed."""
    printed = {}
    for compiler, clang in (("gcc", False), ("clang", True)):
        command = [compiler, "-c", "in.i", "-o", "out.o", *(["-fno-integrated-as"] * clang)]
        real = printed[compiler] = _commands([*command, *args])
        model = effective([*command, *args], clang=clang)
        if "as" in real:
            assembler, carried = real["as"], model.assembler_carried
            assert assembler[-3:-1] == ["-o", "out.o"], assembler
            assert assembler[len(assembler) - 3 - len(carried) : -3] == carried, (args, assembler)
            before = assembler[: len(assembler) - 3 - len(carried)]
            assert _in_order(model.assembler_forwarded, before), (args, assembler)
        if "cc1" in real:
            assert _contiguous(model.front_end, real["cc1"]), (args, real["cc1"])
    return printed


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces_of_a_command)
def test_the_model_is_what_the_drivers_run(pieces: list[list[str]]) -> None:
    """Random command lines of the property above (the judge not asked). A driver that
    refuses an option prints nothing to compare; the test below makes sure they print."""
    _assert_model_matches([arg for piece in pieces for arg in piece])


@pytest.mark.parametrize(
    "args",
    [
        ["-Wa,--defsym,@F", "-I", "/inc", "-Xassembler", "-W", "-Wa,-g,--64", "-I/j"],
        ["-Wa,--defsym", "-Wa,@F", "-Xassembler", "--defsym", "-Wa,X=1"],
        ["-Wa,--defsym", "-Xassembler", "@F", "-Wp,-DX", "-Xpreprocessor", "-D@F"],
    ],
)
def test_gcc_hands_the_assembler_what_the_model_says(args: list[str]) -> None:
    assert "as" in _assert_model_matches(args)["gcc"]


@pytest.mark.parametrize(
    "args",
    [
        ["-Xclang", "-mllvm", "-Xclang", "-a", "-mllvm", "-b", "-Xclang", "-c", "-mllvm", "@F"],
        ["-ffile-prefix-map=/z=/w", "-fdebug-prefix-map=/x=/y", "-I/i", "-Wa,--defsym,@F"],
        ["-Xassembler", "--defsym", "-Wa,@F", "-I", "@F", "-Xclang", "@F"],
    ],
)
def test_clang_hands_the_assembler_and_its_front_end_what_the_model_says(
    args: list[str],
) -> None:
    printed = _assert_model_matches(args)["clang"]
    assert "as" in printed and "cc1" in printed
