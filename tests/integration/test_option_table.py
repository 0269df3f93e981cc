"""The option table (wire/compiler_options.txt) against the compilers installed here.

Two things are checked by running gcc, g++, clang and GNU as:
- every spelling the table accepts is one that at least one of them recognises
  (a typo would let nothing through, but would also say the table was never read
  against a real compiler);
- every option the table says takes the *next* argument as its value really does,
  in every compiler that knows it. This is the check that matters for safety: if the
  scanner took ``-fplugin=evil.so`` as some option's value while the compiler read it
  as an option, the judge would never look at it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from daemon.judge import Judge, Refused
from tests.support.option_samples import as_written, unrecognised
from wire.args import Form, OptionSpec, default_table

pytestmark = pytest.mark.integration

CANARY = "-fdistlb-canary-not-an-option"


def _tools() -> dict[str, list[str]]:
    missing = [t for t in ("gcc", "g++", "clang", "as") if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing compilers {missing}: run scripts/bootstrap.sh", pytrace=False)
    return {
        "gcc": ["gcc", "-c", "-x", "c", "/dev/null", "-o", "/dev/null"],
        "g++": ["g++", "-c", "-x", "c++", "/dev/null", "-o", "/dev/null"],
        "clang": ["clang", "-c", "-x", "c", "/dev/null", "-o", "/dev/null"],
    }


def _wrap(context: str, args: Iterable[str]) -> list[str]:
    """Arguments that reach ``context`` from the driver's command line."""
    flag = {"as": "-Xassembler", "cc1": "-Xclang", "llvm": "-mllvm", "cpp": "-Xpreprocessor"}
    return [piece for arg in args for piece in (flag[context], arg)]


def _commands(context: str, written: list[str]) -> dict[str, list[str]]:
    tools = _tools()
    if context == "driver":
        return {name: [*base, *written] for name, base in tools.items()}
    if context == "as":
        return {"as": ["as", *written, "-o", "/dev/null", "/dev/null"]}
    if context in ("cc1", "llvm"):
        return {"clang": [*tools["clang"], *_wrap(context, written)]}
    return {name: [*base, *_wrap(context, written)] for name, base in tools.items()}


def _accepted_specs() -> dict[str, list[list[OptionSpec]]]:
    """Accepting entries by context, grouped by table line ([no-] lines give two)."""
    lines: dict[tuple[str, int], list[OptionSpec]] = defaultdict(list)
    for spec in default_table().specs:
        if spec.kind not in ("refuse", "specs") and spec.form is not Form.FAMILY:
            lines[(spec.context, spec.line)].append(spec)
    by_context: dict[str, list[list[OptionSpec]]] = defaultdict(list)
    for (context, _), group in lines.items():
        by_context[context].append(group)
    return by_context


def test_every_accepted_spelling_is_known_to_an_installed_compiler() -> None:
    unknown = []
    for context, groups in _accepted_specs().items():
        written = {id(spec): as_written(spec) for group in groups for spec in group}
        everything = [arg for args in written.values() for arg in args]
        commands = _commands(context, everything)
        complaints = {tool: unrecognised(command) for tool, command in commands.items()}
        for group in groups:
            known = any(
                not any(arg in said for arg in written[id(spec)])
                for spec in group
                for said in complaints.values()
            )
            if not known:
                unknown.append(f"{context}:{group[0].spelling} (line {group[0].line})")
    assert unknown == [], "table entries no installed compiler knows"


def test_options_that_take_the_next_argument_really_take_it() -> None:
    """If a compiler read the next argument as an option of its own, the scanner
    would have hidden that option from the judge."""
    misread = []
    for context, groups in _accepted_specs().items():
        for group in groups:
            for spec in group:
                if spec.form not in (Form.SEPARATE, Form.EITHER):
                    continue
                alone = _commands(context, as_written(spec))
                with_canary = _commands(context, [spec.spelling, CANARY])
                for tool, command in with_canary.items():
                    knows_it = not (set(as_written(spec)) & unrecognised(alone[tool]))
                    said_by = {"driver": f"{tool}", "cc1": "error"}.get(context)
                    if knows_it and CANARY in unrecognised(command, said_by):
                        misread.append(f"{tool}: {context}:{spec.spelling}")
    assert misread == []


def _every_spelling() -> list[str]:
    """Every option spelling the installed gcc and clang know, as far as they tell:
    their help texts, clang's completion list, and the option names in clang's library
    (``--autocomplete`` leaves out some, the Darwin linker's among them)."""
    texts = [
        subprocess.run(command, capture_output=True, text=True, timeout=120, check=False).stdout
        for command in (
            ["gcc", "-v", "--help"],
            ["g++", "-v", "--help"],
            ["gcc", "--help=common,optimizers,target,warnings,params,undocumented,c,c++"],
            ["clang", "--help-hidden"],
            ["clang", "--autocomplete=-"],
        )
    ]
    spellings = set(re.findall(r"(?:^|\s)(-[A-Za-z_#][^\s,\[<=]*=?)", "\n".join(texts), re.M))
    library = Path(
        subprocess.run(
            ["clang", "-print-file-name=libclang-cpp.so"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    )
    if library.is_file():
        data = library.read_bytes()
        spellings.update(
            m.decode() for m in re.findall(rb"\x00(-[A-Za-z_][\w+.-]{1,60}=?)\x00", data)
        )
    return sorted(spellings)


_STOPS_REPORTING = ("-Werror", "-Wfatal-errors", "-w", "-ferror-limit", "-fmax-errors",
                    "-fmessage-length", "-Wno-error")  # fmt: skip


def test_no_option_the_judge_takes_alone_makes_a_compiler_take_the_next_argument() -> None:
    """The other direction of the check above: every spelling the compilers know that
    the judge accepts as one whole argument must not make gcc or clang read the next
    argument as its value (else whatever follows would escape the judge: the review
    found clang's -isystem-after, -undefined, -lazy_library, -multiply_defined...)."""
    judge = Judge()
    accepted = []
    for spelling in _every_spelling():
        try:
            judge.judge(["clang", "-c", "x.c", "-o", "x.o", spelling])
        except Refused:
            continue
        accepted.append(spelling)
    assert len(accepted) > 500, "too few spellings found: is clang installed?"
    taking = []
    tools = _tools()
    # Options that stop the compiler reporting after an error run alone, one pair each.
    alone = [s for s in accepted if s.startswith(_STOPS_REPORTING)]
    batched = [s for s in accepted if not s.startswith(_STOPS_REPORTING)]
    chunks = [batched[i : i + 150] for i in range(0, len(batched), 150)] + [[s] for s in alone]

    def run(chunk: list[str], start: int) -> list[str]:
        canaries = [f"-fdistlb-canary-{start + i}" for i in range(len(chunk))]
        pairs = [arg for pair in zip(chunk, canaries, strict=True) for arg in pair]
        found = []
        for tool in ("gcc", "clang"):
            unknown = unrecognised([*tools[tool], *pairs])
            found += [f"{tool}: {s}" for s, c in zip(chunk, canaries, strict=True)
                      if c not in unknown]  # fmt: skip
        return found

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        for found in pool.map(run, chunks, [n * 1000 for n in range(len(chunks))]):
            taking += found
    assert taking == []


LINKER_CANARY = "distlb_linker_canary"


@pytest.mark.parametrize("compiler", ["gcc", "g++", "clang"])
@pytest.mark.parametrize("mode", ["-c", "-S"])
def test_the_linkers_options_reach_no_program_under_c_or_s(
    compiler: str, mode: str, tmp_path: Path
) -> None:
    """The judge leaves the table's linker options out of what it sends on
    (daemon/canonical.py). That changes nothing: under -c and -S the drivers hand them
    to no program (-### shows every command they would run), and the output is byte for
    byte the same without them."""
    linker = [spec for spec in default_table().specs if spec.kind == "linker"]
    assert {spec.spelling for spec in linker} >= {"-Wl,", "-Xlinker", "-l", "-L", "-z", "-u"}
    options = [
        arg
        for spec in linker
        for arg in ([spec.spelling + LINKER_CANARY] if spec.form is Form.JOINED else [])
        + ([spec.spelling, LINKER_CANARY] if spec.may_take_next else [])
    ]
    source = tmp_path / "x.i"
    source.write_text("int distlb_linked(int x) { return 3 * x; }\n")

    def compile_(*extra: str, output: str = "out") -> subprocess.CompletedProcess[str]:
        command = [compiler, "-g", "-O2", mode, str(source), "-o", str(tmp_path / output)]
        return subprocess.run(
            [*command, *extra], capture_output=True, text=True, timeout=60, check=True
        )

    shown = compile_("-###", *options).stderr.splitlines()
    # The commands -### shows start with a space. (gcc also puts -z, -L and -u in the
    # environment of cc1 and as, COLLECT_GCC_OPTIONS, which only collect2 and
    # lto-wrapper read, and neither runs: the outputs below are the same.)
    commands = [line for line in shown if line.startswith(" ")]
    assert len(commands) >= 1
    assert [line for line in commands if LINKER_CANARY in line] == []
    compile_()
    compile_(*options, output="with-linker-options")
    assert (tmp_path / "out").read_bytes() == (tmp_path / "with-linker-options").read_bytes()
