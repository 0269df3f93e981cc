"""What a real distccd takes for a job's input and output (daemon/distccd_argv.py), and
the canonical command line that makes it take exactly the judge's.

distccd (3.4) does not parse options: it takes the first argument that looks like a
source for the input, the argument after the first ``-o`` for the output, and puts its
own files in their place. The review showed what that made of command lines the judge
had accepted; the canonical form puts the output and the input before anything a
client writes, and the judge refuses what distccd would still read otherwise.
tests/integration/test_distccd_reading.py holds the model to the real distccd.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from daemon.distccd_argv import DistccdReading, disagreement, is_distccd_source, reading
from daemon.judge import Judge, Refused
from daemon.judge_values import NESTED_KINDS
from tests.support.distccd_reading import command_lines
from wire.args import scan

JUDGE = Judge(compilers={"gcc": "/usr/bin/gcc"})
FREED = "-fcompare-debug=-wrapper /bin/sh,-c,id"


def test_the_model_finds_what_the_review_found() -> None:
    # -Xlinker -o: distccd's output is the second -Xlinker, which it replaces, and the
    # value that -Xlinker carried is left standing as an option of its own.
    rce = ["gcc", "-c", "-Xlinker", "-o", "-Xlinker", FREED, "in.c"]
    assert reading(rce) == DistccdReading((6,), (4,), 6, 4)
    # -o x.c: distccd's temp source goes where x.c was, then its temp object over it,
    # and the input the client named (a file of distccd's machine) is compiled.
    swap = ["gcc", "-c", "-o", "x.c", "/srv/secret.c"]
    assert reading(swap) == DistccdReading((4,), (3,), 3, 3)


@pytest.mark.parametrize(
    ("arg", "source"),
    [("x.c", True), ("-DX=y.cc", True), ("dir.c/x", False), ("x.", False), ("a.o", False),
     ("x.C", True), ("x.s", False), ("gcc", False)],
)  # fmt: skip
def test_distccd_takes_for_a_source_any_argument_by_the_text_after_its_last_dot(
    arg: str, source: bool
) -> None:
    assert is_distccd_source(arg) is source


@pytest.mark.parametrize(
    "argv",
    [
        ["gcc", "-c", "-Xlinker", "-o", "-Xlinker", FREED, "in.c"],
        ["gcc", "-c", "-o", "x.c", "/srv/secret.c"],
        ["gcc", "-c", "-Wl,-o,x.c", "in.c"],
        ["gcc", "-DSRC=x.c", "-c", "in.c"],
        ["gcc", "-MT", "x.c", "-c", "in.c"],
    ],
)
def test_what_the_review_sent_is_made_unambiguous(argv: list[str]) -> None:
    job = JUDGE.judge(argv)

    assert job.argv[1:3] == ("-o", "distlb.o")
    assert reading(job.argv) == DistccdReading((job.input_index,), (2,), job.input_index, 2)
    assert FREED not in job.argv and "-Xlinker" not in job.argv


@pytest.mark.parametrize(
    ("extra", "culprit"),
    [
        (["-I", "dir.c"], "'dir.c'"),
        (["-D", "NAME=v.cc"], "'NAME=v.cc'"),
        (["--param", "x86.i"], "'x86.i'"),
        (["-Xassembler", "--defsym", "-Xassembler", "X=a.o"], "'X=a.o'"),
        (["-I", "lib.o"], "'lib.o'"),
    ],
)
def test_a_value_distccd_would_take_for_the_input_or_output_is_refused(
    extra: list[str], culprit: str
) -> None:
    with pytest.raises(Refused) as refused:
        JUDGE.judge(["gcc", "-c", "in.c", *extra])

    assert culprit in refused.value.reason
    assert "distccd" in refused.value.reason


@pytest.mark.parametrize(
    ("rest", "words"),
    [
        (["-ofoo"], "output"),
        (["-o", "x.o"], "output"),
        (["-Xclang", "y.o"], "output"),
        (["-MT", "x.c", "w.cc"], "source"),
        (["-MQ", "-o", "-Xlinker"], None),  # distccd does not look after -MT and -MQ
        (["-DX=y.c", "-MT", "z.o"], None),  # nor takes an option for an input, but first
    ],
)
def test_distccd_must_find_the_canonical_input_and_output_and_no_other(
    rest: list[str], words: str | None
) -> None:
    reason = disagreement(("gcc", "-o", "distlb.o", "in.c", "-c", *rest), 3, 2)

    assert (reason is None) if words is None else (words in (reason or "")), reason


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(command_lines())
def test_an_accepted_job_means_to_distccd_what_it_meant_to_the_judge(argv: list[str]) -> None:
    try:
        job = JUDGE.judge(argv)
    except Refused:
        return
    scanned = scan(job.argv, start=1)

    assert reading(job.argv) == DistccdReading(
        (job.input_index,), (job.output_index,), job.input_index, job.output_index
    )
    assert job.input_name == argv[scan(argv, start=1).positionals[0]]
    assert JUDGE.judge(list(job.argv)) == job
    # No linker's option is sent on, and no value that starts with '-' but those
    # carried to another program (which the judge reads as that program's options).
    kinds = [o.spec.kind for o in scanned.options if o.spec is not None]
    assert "linker" not in kinds
    for option in scanned.options:
        if option.value_index is not None and option.value and option.value.startswith("-"):
            assert option.spec is not None and option.spec.kind in NESTED_KINDS, job.argv
