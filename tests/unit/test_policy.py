"""The argument policy: which compile jobs may run, judged from argv alone.

A job is one preprocessed source compiled by an allowlisted compiler named by
its bare name; anything that runs another program, loads code, or reads or
writes a file outside the job is refused with a reason a user can act on.
"""

from __future__ import annotations

import pytest

from server.policy import PREPROCESSED_SUFFIX, Plan, PolicyViolation, judge

COMPILERS = {
    "gcc": "/usr/bin/gcc",
    "g++": "/usr/bin/g++",
    "cc": "/usr/bin/cc",
    "clang": "/usr/bin/clang",
    "clang++": "/usr/bin/clang++",
    "x86_64-linux-gnu-gcc": "/usr/bin/x86_64-linux-gnu-gcc",
    # Allowlisted by mistake: still never run.
    "sh": "/bin/sh",
    "env": "/usr/bin/env",
}


def refusal(argv: list[str]) -> str:
    with pytest.raises(PolicyViolation) as refused:
        judge(argv, COMPILERS)
    assert str(refused.value) == refused.value.reason
    return refused.value.reason


def assert_readable(reason: str) -> None:
    assert isinstance(reason, str)
    assert len(reason) >= 12, reason
    assert " " in reason, reason
    assert "Traceback" not in reason
    assert "None" not in reason


# --- accepted -------------------------------------------------------------------


def test_typical_gcc_compile_becomes_a_plan() -> None:
    plan = judge(["gcc", "-O2", "-g", "-c", "hello.c", "-o", "hello.o"], COMPILERS)

    assert plan == Plan(
        compiler="gcc",
        compiler_path="/usr/bin/gcc",
        args=("-O2", "-g", "-c"),
        source_suffix=".i",
        input_name="hello.c",
        output_name="hello.o",
    )


def test_plan_command_puts_the_job_paths_last() -> None:
    plan = judge(["g++", "-std=c++17", "-c", "a.cc", "-o", "a.o"], COMPILERS)

    assert plan.command("/job/in.ii", "/job/out.o") == [
        "/usr/bin/g++",
        "-std=c++17",
        "-c",
        "/job/in.ii",
        "-o",
        "/job/out.o",
    ]


def test_joined_dash_o_is_the_output() -> None:
    plan = judge(["g++", "-c", "src/a.cc", "-obuild/a.o"], COMPILERS)

    assert plan.output_name == "build/a.o"
    assert plan.args == ("-c",)
    assert plan.input_name == "src/a.cc"


def test_output_defaults_to_the_input_stem_dot_o() -> None:
    assert judge(["clang", "-c", "src/dir/widget.c"], COMPILERS).output_name == "widget.o"


def test_output_defaults_to_dot_s_with_dash_capital_s() -> None:
    assert judge(["clang", "-S", "src/widget.c"], COMPILERS).output_name == "widget.s"


@pytest.mark.parametrize(
    ("input_name", "suffix"),
    [
        ("x.c", ".i"),
        ("x.i", ".i"),
        ("x.cc", ".ii"),
        ("x.cpp", ".ii"),
        ("x.cxx", ".ii"),
        ("x.cp", ".ii"),
        ("x.c++", ".ii"),
        ("x.C", ".ii"),
        ("x.ii", ".ii"),
        ("x.m", ".mi"),
        ("x.mi", ".mi"),
        ("x.mm", ".mii"),
        ("x.M", ".mii"),
        ("x.mii", ".mii"),
    ],
)
def test_source_extension_picks_the_preprocessed_suffix(input_name: str, suffix: str) -> None:
    assert judge(["gcc", "-c", input_name], COMPILERS).source_suffix == suffix


def test_suffix_table_covers_exactly_distccs_source_extensions() -> None:
    assert set(PREPROCESSED_SUFFIX) == {
        "c", "i", "cc", "cpp", "cxx", "cp", "c++", "C", "ii", "m", "mi", "mm", "M", "mii"
    }  # fmt: skip


def test_extension_is_taken_from_the_file_name_not_the_directory() -> None:
    plan = judge(["gcc", "-c", "lib.v2/parser.cc"], COMPILERS)

    assert plan.source_suffix == ".ii"
    assert plan.output_name == "parser.o"


@pytest.mark.parametrize(
    "argv",
    [
        ["gcc", "-c", "x.c", "-Wall", "-Wextra", "-fPIC", "-std=c11", "-march=native"],
        ["gcc", "-c", "x.c", "-I", "include", "-Iother", "-D", "NDEBUG", "-DVERSION=3"],
        ["gcc", "-c", "x.c", "-MD", "-MF", "deps/x.d", "-MT", "x.o"],
        ["gcc", "-c", "x.c", "-fdebug-prefix-map=/home/me=."],
        ["gcc", "-c", "x.c", "-Wa,--noexecstack"],
        ["gcc", "-c", "x.c", "-EB"],
        ["clang", "-c", "x.c", "-Xclang", "-fcolor-diagnostics"],
        ["clang++", "-target", "aarch64-linux-gnu", "-c", "x.cpp"],
        ["x86_64-linux-gnu-gcc", "-c", "x.c", "-o", "obj/x.o"],
        ["cc", "-c", "-o", "x.o", "x.c"],
    ],
    ids=[
        "warnings-and-codegen",
        "includes-and-defines",
        "dependency-file-in-job",
        "prefix-map",
        "assembler-flag-without-path",
        "endianness-EB",
        "xclang-harmless",
        "cross-target",
        "triplet-compiler",
        "output-before-input",
    ],
)
def test_ordinary_compile_jobs_are_accepted(argv: list[str]) -> None:
    plan = judge(argv, COMPILERS)

    assert plan.compiler == argv[0]
    assert plan.compiler_path == COMPILERS[argv[0]]


def test_option_values_are_not_taken_for_the_input() -> None:
    plan = judge(["gcc", "-D", "main.c", "-I", "dir.c", "-c", "real.c"], COMPILERS)

    assert plan.input_name == "real.c"
    assert plan.args == ("-D", "main.c", "-I", "dir.c", "-c")


def test_plan_args_never_contain_the_input_or_an_output() -> None:
    plan = judge(["gcc", "-c", "x.c", "-o", "y.o", "-O1"], COMPILERS)

    assert "x.c" not in plan.args
    assert "-o" not in plan.args
    assert "y.o" not in plan.args


# --- refused: the compiler ---------------------------------------------------------


def test_cve_2004_2687_shell_command_is_refused() -> None:
    # The classic distccd exploit: ARGV sh -c <command> # -c main.c -o main.o
    reason = refusal(["sh", "-c", "id", "#", "-c", "main.c", "-o", "main.o"])

    assert "not a compiler" in reason
    assert_readable(reason)


@pytest.mark.parametrize("name", ["sh", "env", "bash", "python3", "xargs", "sudo"])
def test_shells_and_launchers_are_never_compilers(name: str) -> None:
    compilers = {**COMPILERS, name: f"/usr/bin/{name}"}

    with pytest.raises(PolicyViolation, match="not a compiler"):
        judge([name, "-c", "x.c"], compilers)


@pytest.mark.parametrize("name", ["/usr/bin/gcc", "./gcc", "../bin/gcc", "bin\\gcc", ""])
def test_compiler_given_as_a_path_is_refused(name: str) -> None:
    reason = refusal([name, "-c", "x.c"])

    assert "bare name" in reason
    assert_readable(reason)


def test_compiler_not_on_the_allowlist_is_refused() -> None:
    reason = refusal(["tcc", "-c", "x.c"])

    assert "allowlist" in reason
    assert "tcc" in reason


def test_empty_command_is_refused() -> None:
    assert_readable(refusal([]))


# --- refused: arguments --------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "culprit"),
    [
        (["-fplugin=/tmp/evil.so"], "-fplugin"),
        (["-fplugin-arg-evil-key=value"], "-fplugin-arg"),
        (["-fpass-plugin=/tmp/p.so"], "-fpass-plugin"),
        (["-iplugindir=/tmp"], "-iplugindir"),
        (["-wrapper", "gdb,--args"], "-wrapper"),
        (["-B", "/tmp/evil/"], "-B"),
        (["-B/tmp/evil/"], "-B/tmp/evil/"),
        (["-specs=/tmp/evil.specs"], "-specs"),
        (["--specs=/tmp/evil.specs"], "--specs"),
        (["--config", "/tmp/evil.cfg"], "--config"),
        (["@/etc/passwd"], "@/etc/passwd"),
        (["@args.rsp"], "@args.rsp"),
        (["-fdump-tree-all"], "-fdump-tree-all"),
        (["-fdump-rtl-expand"], "-fdump-rtl-expand"),
        (["-save-temps"], "-save-temps"),
        (["-save-temps=obj"], "-save-temps=obj"),
        (["-dumpdir", "/tmp/"], "-dumpdir"),
        (["-dumpbase", "x"], "-dumpbase"),
        (["-aux-info", "/tmp/x"], "-aux-info"),
        (["-fprofile-use=/var/prof"], "-fprofile-use"),
        (["-include", "/etc/passwd"], "-include"),
        (["-include/etc/passwd"], "-include"),
        (["-imacros", "/etc/passwd"], "-imacros"),
        (["--sysroot=/"], "--sysroot"),
        (["-isysroot", "/"], "-isysroot"),
        (["-Wp,-MD,/tmp/x.d"], "-Wp,"),
        (["-Xpreprocessor", "-MD"], "-Xpreprocessor"),
        (["-Wa,-adhln=/tmp/x"], "-adhln=/tmp/x"),
        (["-Wa,--noexecstack,-alh=listing.txt"], "-alh"),
        (["-Wa,--MD,deps"], "--MD"),
        (["-Wa,@/etc/passwd"], "@/etc/passwd"),
        (["-Xassembler", "-adhln=x.lst"], "-adhln"),
        (["-Xassembler", "--defsym=X=1"], "--defsym"),
        (["-Xclang", "-load", "-Xclang", "/tmp/evil.so"], "-load"),
        (["-Xclang", "-plugin"], "-plugin"),
        (["-Xclang", "-add-plugin"], "-add-plugin"),
        (["-MF", "/tmp/x.d"], "/tmp/x.d"),
        (["-MF", "../x.d"], "../x.d"),
        (["-MF/tmp/x.d"], "-MF/tmp/x.d"),
        (["-E"], "-E"),
        (["-M"], "-M"),
        (["-MM"], "-MM"),
        (["-x", "c"], "-x"),
        (["-xc"], "-xc"),
    ],
)
def test_argument_that_escapes_the_job_is_refused(extra: list[str], culprit: str) -> None:
    reason = refusal(["gcc", "-c", "x.c", *extra])

    assert culprit in reason
    assert_readable(reason)


@pytest.mark.parametrize(
    "output",
    ["/tmp/x.o", "/etc/cron.d/job", "../x.o", "obj/../../x.o", "..\\x.o"],
)
def test_output_outside_the_job_is_refused(output: str) -> None:
    reason = refusal(["gcc", "-c", "x.c", "-o", output])

    assert repr(output) in reason
    assert_readable(reason)


def test_joined_absolute_output_is_refused() -> None:
    assert "/tmp/x.o" in refusal(["gcc", "-c", "x.c", "-o/tmp/x.o"])


def test_two_outputs_are_refused() -> None:
    assert_readable(refusal(["gcc", "-c", "x.c", "-o", "a.o", "-o", "b.o"]))


def test_option_missing_its_value_is_refused() -> None:
    reason = refusal(["gcc", "-c", "x.c", "-o"])

    assert "-o" in reason
    assert "missing" in reason


def test_job_without_dash_c_is_refused() -> None:
    reason = refusal(["gcc", "x.c", "-o", "x"])

    assert "-c" in reason
    assert_readable(reason)


def test_job_with_two_inputs_is_refused() -> None:
    reason = refusal(["gcc", "-c", "a.c", "b.c"])

    assert "a.c" in reason
    assert "b.c" in reason


def test_job_without_input_is_refused() -> None:
    assert_readable(refusal(["gcc", "-c", "-O2"]))


@pytest.mark.parametrize("input_name", ["x.s", "x.S", "x.f90", "x.o", "Makefile", "-", "dir.c/x"])
def test_input_that_is_not_a_c_family_source_is_refused(input_name: str) -> None:
    reason = refusal(["gcc", "-c", input_name])

    assert input_name in reason
    assert_readable(reason)


# --- spellings that once got past the policy ---------------------------------------------
# Each was checked against GCC 12: the spelling does what the refused option does.


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(["--plugin=/tmp/evil.so"], id="--plugin=-is--fplugin"),
        pytest.param(["--prefix=/tmp/evil/"], id="--prefix=-is--B"),
        pytest.param(["--include=/etc/passwd"], id="--include=-is--include"),
        pytest.param(["--imacros=/etc/passwd"], id="--imacros=-is--imacros"),
        pytest.param(["--save-temps"], id="--save-temps-is--save-temps"),
        pytest.param(["--dump-tree-all"], id="--dump-tree-all-is--fdump-tree-all"),
        pytest.param(["--preprocess"], id="--preprocess-is--E"),
        pytest.param(["--dependencies"], id="--dependencies-is--M"),
        pytest.param(["--language=c"], id="--language-is--x"),
        pytest.param(["--for-assembler=-adhln=/tmp/x"], id="--for-assembler-is--Wa"),
    ],
)
def test_gcc_long_spelling_of_a_refused_option_is_refused(extra: list[str]) -> None:
    assert_readable(refusal(["gcc", "-c", "x.c", *extra]))


@pytest.mark.parametrize("option", ["-D", "-I", "-U"])
def test_response_file_given_as_an_option_value_is_refused(option: str) -> None:
    assert "@/etc/passwd" in refusal(["gcc", "-c", "x.c", option, "@/etc/passwd"])


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(["-fopt-info-all=/tmp/x"], id="fopt-info-to-file"),
        pytest.param(["-fprofile-note=/tmp/x.gcno", "--coverage"], id="fprofile-note"),
    ],
)
def test_option_that_writes_a_file_where_it_chooses_is_refused(extra: list[str]) -> None:
    assert_readable(refusal(["gcc", "-O2", "-c", "x.c", *extra]))
