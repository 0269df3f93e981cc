"""The judge's one rule for values (daemon/judge_values.py): no value, wherever it
stands, starts with '@', and only the table's path kinds take a path.

Issue 26: the judge refused '@' only at the start of a whole argument, so
``-Wa,--defsym,@FILE`` (and the same split over two carriers) reached GNU as, which
expands response files before it parses options; ``-I@FILE`` reached it too, as
``-I @FILE``. Each case below was accepted before the rule moved into the value check.
"""

from __future__ import annotations

import pytest
from _pytest.mark.structures import ParameterSet

from daemon.judge import Judge, Refused
from daemon.judge_values import NESTED_KINDS, PATH_KINDS, value_refusal
from wire.args import Form, OptionSpec, default_table

JUDGE = Judge(compilers={"gcc": "/usr/bin/gcc", "clang": "/usr/bin/clang"})


def refusal(*extra: str, compiler: str = "gcc") -> str:
    with pytest.raises(Refused) as refused:
        JUDGE.judge([compiler, "-c", "x.c", "-o", "x.o", *extra])
    return refused.value.reason


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(["-Wa,--defsym,@/etc/passwd"], id="defsym-value-in-one-carrier"),
        pytest.param(["-Wa,--defsym", "-Wa,@/etc/passwd"], id="split-over-two-Wa"),
        pytest.param(["-Xassembler", "--defsym", "-Wa,@/etc/passwd"], id="Xassembler-then-Wa"),
        pytest.param(["-Wa,--defsym", "-Xassembler", "@/etc/passwd"], id="Wa-then-Xassembler"),
        pytest.param(["-Wa,--noexecstack,--defsym,@/proc/self/fd/2"], id="defsym-stderr"),
        pytest.param(["-I@/etc/passwd"], id="I-joined-reaches-as-separate"),
        pytest.param(["-isystem@/etc/passwd"], id="isystem-joined"),
        pytest.param(["-iquote@/etc/passwd"], id="iquote-joined"),
        pytest.param(["-fdebug-prefix-map=@/etc/passwd=x"], id="prefix-map-reaches-as"),
        pytest.param(["-ffile-prefix-map=@/etc/passwd=x"], id="file-prefix-map"),
        pytest.param(["-MT@/etc/passwd"], id="make-target"),
        pytest.param(["-DX", "-Wp,-D,@/etc/passwd"], id="Wp-define-value"),
        pytest.param(["-Xpreprocessor", "-D", "-Xpreprocessor", "@/etc/passwd"], id="Xpreproc"),
        pytest.param(["-Wl,-z,@/etc/passwd"], id="Wl-piece"),
        pytest.param(["-Xclang", "-mllvm", "-Xclang", "@/etc/passwd"], id="Xclang-mllvm"),
        pytest.param(["-Xclang", "-target-feature", "-Xclang", "@/etc/passwd"], id="Xclang-value"),
    ],
)  # fmt: skip
def test_a_response_file_is_refused_in_every_value_and_carried_argument(extra: list[str]) -> None:
    reason = refusal(*extra)

    assert "@/" in reason and "@FILE" in reason, reason


def test_mllvm_with_its_value_joined_is_refused() -> None:
    # clang 16 and later read -mllvm=X as -mllvm X; the -m family took it for a target
    # option, and X (an LLVM option that writes a file) went unjudged.
    reason = refusal("-mllvm=-info-output-file=stats.txt", "-mllvm=-stats", compiler="clang")

    assert "-mllvm=" in reason


def test_every_option_a_family_covers_is_refused_when_its_value_is_joined_with_equals() -> None:
    """Not only -mllvm: any option that takes the next argument, written NAME=VALUE where
    only a family (-W, -m) would match, is refused by the same rule."""
    table = default_table()

    def only_a_family_matches(arg: str) -> bool:
        found = table.lookup("driver", arg)
        return found is not None and found[0].form is Form.FAMILY

    covered = [
        spec
        for spec in table.specs
        if spec.context == "driver"
        and spec.may_take_next
        and only_a_family_matches(spec.spelling + "=x")
    ]
    assert "-mllvm" in {spec.spelling for spec in covered}
    for spec in covered:
        with pytest.raises(Refused):
            JUDGE.judge(["clang", "-c", "x.c", f"{spec.spelling}=x"])


@pytest.mark.parametrize(
    "extra",
    [
        ["-Wa,--defsym,X=1"],
        ["-Wa,--defsym", "-Xassembler", "X=1"],
        ["-DDATADIR=/usr/share/app", '-DNAME="x/y"', "-DF(a,b)=a+b"],
        ["-I/home/me/src/include", "-isystem", "/opt/x/include", "-MT", "obj/x.o"],
        ["-fdebug-prefix-map=/home/me=.", "-L/usr/lib/x", "-Wl,-rpath,/opt/lib"],
        ["-Wp,-U_FORTIFY_SOURCE,-D_FORTIFY_SOURCE=3"],
    ],
)
def test_values_that_real_builds_send_are_still_accepted(extra: list[str]) -> None:
    assert JUDGE.judge(["gcc", "-c", "x.c", *extra])


@pytest.mark.parametrize(
    "extra",
    [
        ["-Wa,--defsym,/etc/passwd"],
        ["-Wa,--defsym", "-Wa,../../x"],
        ["-D/etc/passwd"],
        ["-U", "../x"],
        ["-Wp,-D,/etc/x"],
        ["-fsanitize=address,../x"],
        ["-mllvm", "-inline-threshold=/x"],
    ],
)
def test_a_path_is_refused_where_the_table_does_not_say_the_value_is_one(
    extra: list[str],
) -> None:
    assert refusal(*extra)


def _valued_specs() -> list[ParameterSet]:
    return [
        pytest.param(spec, id=f"{spec.context}:{spec.spelling}")
        for spec in default_table().specs
        if spec.kind not in ("-", "refuse")
    ]


@pytest.mark.parametrize("spec", _valued_specs())
def test_no_value_of_any_option_in_the_table_may_start_with_at(spec: OptionSpec) -> None:
    for separate in (False, True):
        reason = value_refusal(spec, "@/etc/passwd", "x", separate=separate)
        assert reason is not None and "@" in reason


@pytest.mark.parametrize("spec", _valued_specs())
def test_only_the_path_kinds_take_a_path(spec: OptionSpec) -> None:
    """By construction: an entry's kind decides, and only path, output and specs are
    paths (a linker value goes to a linker that never runs; a carrier's pieces are each
    judged as an argument of the program it carries them to)."""
    reason = value_refusal(spec, "/etc/passwd", "x", separate=False)
    if spec.kind in PATH_KINDS - {"specs"} or spec.kind == "linker" or spec.kind in NESTED_KINDS:
        assert reason is None
    else:
        assert reason is not None
    assert "no rule" not in (reason or ""), "a kind the value check does not know"


def test_an_option_an_operator_allows_by_prefix_still_takes_no_response_file() -> None:
    judge = Judge(allow_options=["-fnew-thing=*"])

    assert judge.judge(["gcc", "-c", "x.c", "-fnew-thing=3"])
    with pytest.raises(Refused, match="@FILE"):
        judge.judge(["gcc", "-c", "x.c", "-fnew-thing=@/etc/passwd"])
