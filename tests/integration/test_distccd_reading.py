"""A real distccd runs exactly the command line the judge accepted, with only the input
and the output replaced by its own files (the trust review's finding 1).

A balancer sends real distccd backends the judge's canonical command line, and distccd
(Debian's 3.4) reads it its own way: the first argument that looks like a source is the
input, the argument after the first ``-o`` the output, and it replaces both. Here distccd
runs a compiler that records the command line it is given (tests/support/
distccd_reading.py), and each test checks what it got against what was sent: for every
way of writing every line of the option table, with values chosen to look like a
source, an object or ``-o``; for generated command lines; and through a balancer.
When distccd runs nothing, its own refusals must say why (it then closes the
connection, and the client compiles locally): never a job it reads otherwise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from client import compile_remote
from daemon.distccd_argv import reading
from daemon.judge import Job, Judge, Refused
from tests.support.distccd_reading import (
    HOSTILE_VALUES,
    RecordingDistccd,
    command_lines,
    distccd_keeps_local,
)
from tests.support.option_samples import sample
from tests.support.servers import StartBalancer
from tests.support.table_cases import accepted_cases
from wire import Request
from wire.args import OptionSpec, default_table

pytestmark = pytest.mark.integration

JUDGE = Judge()
"""The balancer's judge (no compiler allowlist)."""


@pytest.fixture
def recorder(shared_tmp: Path) -> Iterator[RecordingDistccd]:
    daemon = RecordingDistccd.start(shared_tmp)
    yield daemon
    daemon.stop()


def _sent_as_judged(recorder: RecordingDistccd, job: Job) -> list[str]:
    """Send ``job``'s canonical command line; what went wrong (nothing: distccd ran it
    as judged, or ran nothing for one of its own reasons)."""
    got = recorder.run(job.argv)
    refused = distccd_keeps_local(job.argv)
    if got is None:
        return [] if refused else [f"{job.argv}: distccd ran nothing, for no known reason"]
    if refused:
        return [f"{job.argv}: distccd ran it, though it refuses {refused}"]
    problems = recorder.differences(job.argv, job.input_index, job.output_index, got)
    return [f"{job.argv}: {problem}" for problem in problems]


def _values(spec: OptionSpec) -> list[str]:
    return [sample(spec), *HOSTILE_VALUES]


def test_every_line_of_the_table_means_to_distccd_what_it_meant_to_the_judge(
    recorder: RecordingDistccd,
) -> None:
    problems: list[str] = []
    kept_local: dict[str, str] = {}
    cases = accepted_cases(JUDGE, default_table(), _values)
    for case in cases:
        try:
            job = JUDGE.judge(["gcc", "-c", "in.c", *case.args])
        except Refused:  # (accepted after clang's -c x.c; not after gcc's: -x, -S)
            continue
        problems += _sent_as_judged(recorder, job)
        refusal = distccd_keeps_local(job.argv)
        if refusal:
            kept_local[case.name] = refusal

    assert problems == [], "\n".join(problems)
    # Every line of the table runs on distccd, but the one it keeps local itself (its
    # other refusals, -Wa,-a..., -specs=, the profile options, the judge refuses too).
    assert set(kept_local.values()) == {"-flto"}, kept_local


def test_generated_command_lines_mean_to_distccd_what_they_meant_to_the_judge(
    recorder: RecordingDistccd,
) -> None:
    accepted = []

    @settings(
        max_examples=1000,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(command_lines())
    def check(argv: list[str]) -> None:
        try:
            job = JUDGE.judge(argv)
        except Refused:
            return
        accepted.append(job)
        assert _sent_as_judged(recorder, job) == []

    check()
    assert len(accepted) > 30


@pytest.mark.parametrize(
    ("argv", "input_index", "output_index"),
    [
        (["gcc", "-c", "-Xlinker", "-o", "-Xlinker", "-fcompare-debug=x", "in.c"], 6, None),
        (["gcc", "-c", "-o", "x.c", "/srv/secret.c"], 4, 3),
        (["gcc", "-DX=a.c", "-c", "in.c", "-o", "in.o"], 3, 5),
    ],
)
def test_the_check_sees_what_distccd_made_of_what_the_review_sent(
    recorder: RecordingDistccd, argv: list[str], input_index: int, output_index: int | None
) -> None:
    """The test can fail: sent as the client wrote them (as the balancer sent them
    before), distccd replaced another argument than the judge's input or output."""
    got = recorder.run(argv)

    assert got is not None
    assert recorder.differences(argv, input_index, output_index, got) != []
    read = reading(argv)
    assert (read.replaced_input, read.replaced_output) != (input_index, output_index)


def test_through_the_balancer_distccd_gets_the_canonical_command_line(
    recorder: RecordingDistccd, start_balancer: StartBalancer
) -> None:
    """What the balancer forwards (balancer/connection.py) is the judge's canonical
    command line: distccd runs it with just the input and the output replaced."""
    port = recorder.distccd.port
    balancer = start_balancer("--backend", f"127.0.0.1:{port},kind=distccd,slots=2,compilers=gcc")
    balancer.wait_healthy(1)
    for argv in (
        ["gcc", "-c", "-Xlinker", "-o", "-Xlinker", "-fcompare-debug=x", "in.c"],
        ["gcc", "-c", "-o", "x.c", "/srv/secret.c"],
        ["gcc", "-O2", "-x", "c", "-c", "-Wl,-z,relro", "src/in.c", "-o", "obj/in.o", "-g"],
    ):
        for left in recorder.records.iterdir():
            left.unlink()
        job = JUDGE.judge(argv)
        reply = asyncio.run(
            compile_remote("127.0.0.1", balancer.port, Request(1, tuple(argv), b"int x;\n"))
        )
        assert reply.status == 0, reply.stderr
        # (the balancer's probes are recorded too: they come as "gcc -c NAME -o NAME")
        records = [r.read_bytes().decode().split("\0")[:-1] for r in recorder.records.iterdir()]
        [got] = [record for record in records if record[0] == "-o"]
        assert recorder.differences(job.argv, job.input_index, job.output_index, got) == []
