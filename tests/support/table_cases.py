"""Every way of writing every line of the option table: each form (joined, separate),
each carrier for another program (``-Wa,``, ``-Xassembler``, ``-Xclang``, ``-mllvm``,
...), with values a test chooses. Shared by the tests that run the accepted ones through
real tools (tests/integration/test_judge_differential.py) and a real distccd
(tests/integration/test_distccd_reading.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from daemon.judge import Judge, Refused
from wire.args import Form, OptionSpec, OptionTable

FAMILY_MEMBERS = {"driver:-W": "all", "driver:-m": "no-red-zone", "as:-m": "relax-relocations=yes"}
"""The member each family is written as."""


@dataclass(frozen=True)
class Case:
    """One table line written one way, as it stands on the driver's command line."""

    spec: OptionSpec
    args: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"line {self.spec.line} {' '.join(self.args)}"

    def words(self) -> set[str]:
        """Everything a tool could name when it does not know the option."""
        found = set(self.args)
        for arg in self.args:
            if arg.startswith(("-Wa,", "-Wp,")):
                found.update(arg[4:].split(","))
        return found


def written(spec: OptionSpec, value: str) -> list[list[str]]:
    """``spec`` with ``value`` in each form it can be written in (one or two arguments)."""
    if spec.form is Form.FLAG:
        return [[spec.spelling]]
    if spec.form is Form.FAMILY:
        return [[spec.spelling + FAMILY_MEMBERS[f"{spec.context}:{spec.spelling}"]]]
    joined, separate = [spec.spelling + value], [spec.spelling, value]
    return {Form.JOINED: [joined], Form.SEPARATE: [separate], Form.EITHER: [joined, separate]}[
        spec.form
    ]


def carried(context: str, args: list[str]) -> list[list[str]]:
    """``args`` for another program, in each carrier the drivers take them in."""
    if context == "driver":
        return [args]
    if context == "cc1":
        return [[a for arg in args for a in ("-Xclang", arg)]]
    if context == "llvm":
        return [
            [a for arg in args for a in ("-mllvm", arg)],
            [a for arg in args for a in ("-Xclang", "-mllvm", "-Xclang", arg)],
        ]
    joined, separate = {"as": ("-Wa,", "-Xassembler"), "cpp": ("-Wp,", "-Xpreprocessor")}[context]
    forms = [[a for arg in args for a in (separate, arg)]]
    if not any("," in arg for arg in args):
        forms.append([joined + ",".join(args)])
        if len(args) == 2:  # an option and its value in two different carriers
            forms.append([joined + args[0], separate, args[1]])
    return forms


def accepted_cases(
    judge: Judge,
    table: OptionTable,
    values: Callable[[OptionSpec], list[str]],
    needs: Mapping[str, tuple[str, ...]] | None = None,
) -> list[Case]:
    """Every way of writing every accepting line of ``table``, with each of ``values``,
    that ``judge`` accepts (each after ``needs`` of its spelling, options the compilers
    refuse it without)."""
    cases = []
    for spec in table.specs:
        if spec.kind in ("refuse", "output"):  # (every run has an -o: the job's own)
            continue
        seen = set()
        for value in values(spec):
            for args in written(spec, value):
                for carrier in carried(spec.context, args):
                    if tuple(carrier) in seen:
                        continue
                    seen.add(tuple(carrier))
                    try:
                        judge.judge(["clang", "-c", "x.c", *carrier])
                    except Refused:
                        continue
                    needed = (needs or {}).get(spec.spelling, ())
                    cases.append(Case(spec, (*needed, *carrier)))
    return cases
