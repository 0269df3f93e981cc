"""Every option the judge accepts, run by the real tools under strace: none may make a
compile write outside its job directory, read outside the job and the toolchain, or
run anything but the toolchain's own programs (tests/support/tool_trace.py says
exactly what is allowed, and why).

For every line of wire/compiler_options.txt that accepts something, in each form it
can be written (joined, separate) and, for the assembler's, the preprocessor's, clang's
front end's and LLVM's, in each carrier (``-Wa,`` with commas, ``-Xassembler``, the two
mixed, ``-Wp,``, ``-Xpreprocessor``, ``-Xclang``, ``-mllvm``, ``-Xclang -mllvm``), the
test builds a command line with a sample value (for a path kind: a path outside the
job), and also tries ``@FILE`` and a path outside the job as the value: whatever of
that the judge accepts is compiled, as the server would run it (its canonical command,
the server's environment), with gcc, g++, clang and clang with GNU as.

Many options share a run; a run that fails (an option one compiler does not know, two
that conflict) is split until each part runs, so every option is seen in a run that
went to the end (the object written, or with -S the assembly).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pytest

from daemon.judge import Judge
from daemon.specs import DEFAULT_TRUSTED_SPECS_DIRS
from server.sandbox.launcher import child_env
from tests.support.option_samples import sample, unrecognised_in
from tests.support.table_cases import Case, accepted_cases
from tests.support.tool_trace import Traced, outside_the_job, traced_run
from wire.args import OptionSpec, OptionTable, default_table

pytestmark = pytest.mark.integration

SOURCE = "int distlb_value = 42;\nint distlb_twice(int x) { return 2 * x + distlb_value; }\n"
BATCH = 120
"""Options per run: a run costs about as much with 120 as with one."""
ALONE = frozenset({"-S", "--assemble"})
"""Options that stop a compile before the assembler: each runs on its own."""
SPECS_FILE = "/usr/share/dpkg/no-pie-compile.specs"
"""A specs file in a default trusted directory, as Debian ships it."""
NEEDS = {
    "-fasan-shadow-offset=": ("-fsanitize=kernel-address",),
    "-ftrivial-auto-var-init-stop-after=": ("-ftrivial-auto-var-init=pattern",),
}
"""Options the compilers refuse without another one."""


@dataclass(frozen=True)
class Tool:
    name: str
    compiler: str
    source: str
    """The source name a client sends (it picks the language)."""
    extra: tuple[str, ...] = ()
    contexts: tuple[str, ...] = ("driver",)


TARGETS = ("-target", "--target=")
TOOLS = (
    Tool("gcc", "gcc", "x.c", contexts=("driver", "as", "cpp")),
    Tool("g++", "g++", "x.cc"),
    Tool("clang", "clang", "x.c", contexts=("driver", "cc1", "llvm", "cpp")),
    Tool("clang+as", "clang", "x.c", ("-fno-integrated-as",), ("driver", "as")),
)


def _values(spec: OptionSpec, outside: Path) -> list[str]:
    """The sample value of ``spec`` (a path outside the job for a path kind), then what
    an attacker would try: @FILE and, unless the sample is one, a path outside the job."""
    hostile = [f"@{outside}/args", f"{outside}/file"]
    if spec.kind == "path":
        first = f"{outside}/{spec.spelling.strip('-=')}"
        if spec.spelling.endswith("prefix-map="):
            first = f"{outside}/old={outside}/new"
    elif spec.kind == "define":
        first = f"DISTLB_DEFINED={outside}/definition"
    elif spec.kind == "linker":
        first = f"{outside}/linker"
    elif spec.kind == "specs":
        first = SPECS_FILE
    else:
        first = sample(spec)
    if str(outside) in first:
        hostile.remove(f"{outside}/file")
    return [first, *hostile]


@dataclass
class Run:
    tool: Tool
    cases: list[Case]
    traced: Traced
    job_dir: Path


class Differential:
    """Runs cases with the real tools in throwaway job directories, under strace."""

    def __init__(self, judge: Judge, scratch: Path) -> None:
        self.judge = judge
        self.scratch = scratch
        self.programs = frozenset(
            os.path.realpath(path)
            for path in [
                *(shutil.which(name) or name for name in ("gcc", "g++", "clang", "as")),
                *(_prog_name(name) for name in ("cc1", "cc1plus")),
            ]
        )
        self.baseline: dict[str, frozenset[str]] = {}

    def run(self, tool: Tool, cases: list[Case]) -> Run:
        argv = [tool.compiler, *tool.extra, *(a for case in cases for a in case.args)]
        job = self.judge.judge([*argv, "-c", tool.source, "-o", "x.o"])
        job_dir = Path(tempfile.mkdtemp(prefix="job-", dir=self.scratch))
        source = job_dir / f"input{job.source_suffix}"
        source.write_text(SOURCE)
        command = job.command(tool.compiler, str(source), str(job_dir / f"out{job.output_suffix}"))
        traced = traced_run(command, job_dir, child_env(str(job_dir)))
        return Run(tool, cases, traced, job_dir)

    def violations(self, run: Run) -> list[str]:
        baseline = self.baseline.get(run.tool.name, frozenset())
        return outside_the_job(
            run.traced, run.job_dir, self.programs, baseline, DEFAULT_TRUSTED_SPECS_DIRS
        )

    def take_baseline(self, tool: Tool) -> Run:
        run = self.run(tool, [])
        assert run.traced.returncode == 0, run.traced.stderr
        self.baseline[tool.name] = frozenset(a.path for a in run.traced.accesses if not a.writes)
        return run

    def explore(self, tool: Tool, cases: list[Case]) -> Iterator[Run]:
        """Runs ``cases`` with ``tool``, splitting any run that fails until each part
        runs to the end or is one case; drops what the tool says it does not know."""
        pending = [cases]
        while pending:
            batch = pending.pop()
            run = self.run(tool, batch)
            yield run
            if run.traced.returncode == 0 or len(batch) == 1:
                continue
            unknown = unrecognised_in(run.traced.stderr)
            known = [case for case in batch if not case.words() & unknown]
            if len(known) < len(batch):
                pending += [known] if known else []
            else:
                pending += [batch[: len(batch) // 2], batch[len(batch) // 2 :]]

    def culprits(self, run: Run) -> list[str]:
        """Which cases of a run that did something outside the job did it."""
        if len(run.cases) == 1:
            return [f"{run.tool.name}: {run.cases[0].name}: {v}" for v in self.violations(run)]
        found = []
        half = len(run.cases) // 2
        for part in (run.cases[:half], run.cases[half:]):
            again = self.run(run.tool, part)
            if self.violations(again):
                found += self.culprits(again)
        return found or [
            f"{run.tool.name}: {len(run.cases)} cases together: {self.violations(run)}"
        ]


def _prog_name(name: str) -> str:
    done = subprocess.run(
        ["gcc", f"-print-prog-name={name}"], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def check_table(
    table: OptionTable, scratch: Path, lines: Callable[[OptionSpec], bool] = lambda spec: True
) -> tuple[list[str], list[str]]:
    """Run every case the judge accepts from ``table`` (the ``lines`` chosen) with every
    tool. Returns what any of them did outside the job (each with the option that did
    it), and the cases that never ran to the end with any tool."""
    judge = Judge(table=table)
    outside = scratch / "outside"
    outside.mkdir()
    (outside / "args").write_text("")
    cases = [
        case
        for case in accepted_cases(judge, table, lambda spec: _values(spec, outside), NEEDS)
        if lines(case.spec)
    ]
    differential = Differential(judge, scratch)
    work: list[tuple[Tool, list[Case]]] = []
    for tool in TOOLS:
        # (the judge takes no --target with -fno-integrated-as: clang would run the
        # target's own assembler; the other tools run those cases)
        external_as = "-fno-integrated-as" in tool.extra
        mine = [case for case in cases if case.spec.context in tool.contexts
                and not (external_as and case.spec.spelling in TARGETS)]  # fmt: skip
        alone = [case for case in mine if case.spec.spelling in ALONE]
        together = [case for case in mine if case.spec.spelling not in ALONE]
        work += [(tool, [case]) for case in alone]
        work += [(tool, together[i : i + BATCH]) for i in range(0, len(together), BATCH)]

    def explore(item: tuple[Tool, list[Case]]) -> list[Run]:
        return list(differential.explore(*item))

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        baselines = list(pool.map(differential.take_baseline, TOOLS))
        runs = [run for found in pool.map(explore, work) for run in found]
    problems = [v for run in baselines for v in differential.violations(run)]
    for run in runs:
        if differential.violations(run):
            problems += differential.culprits(run)
    ran = {case for run in runs if run.traced.returncode == 0 for case in run.cases}
    return sorted(set(problems)), [case.name for case in cases if case not in ran]


@pytest.fixture
def scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="distlb-differential-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_no_option_the_judge_accepts_makes_a_tool_reach_outside_the_job(scratch: Path) -> None:
    table = default_table()
    problems, never_ran = check_table(table, scratch)

    assert problems == [], "\n".join(problems)
    # Every way of writing every accepting line (so every context, form, carrier and
    # value kind) ran to the end with some tool.
    assert never_ran == []


def _table_with(line: str) -> OptionTable:
    text = resources.files("wire").joinpath("compiler_options.txt").read_text("utf-8")
    return OptionTable.parse(text + "\n" + line + "\n")


def test_the_check_catches_an_option_wrongly_allowed(scratch: Path) -> None:
    """The test can fail: with the assembler's listing option (-alm=FILE) taken for an
    unopened path, it finds the listing the assembler writes outside the job."""
    wrong = _table_with("as:-alm= joined path")
    problems, _ = check_table(wrong, scratch, lambda spec: spec.spelling == "-alm=")

    assert any("-alm=" in p and "writes" in p and "/outside/" in p for p in problems), problems
