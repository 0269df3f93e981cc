"""A real distccd whose compiler records the command line it is given, what Debian's
distccd 3.4 refuses to run, and generated command lines that try to make distccd read a
job otherwise than the judge (tests/unit/daemon/test_distccd_argv.py,
tests/integration/test_distccd_reading.py).

The refusals below are written for these tests from distcc's src/arg.c
(``dcc_scan_args``) and src/serve.c, apart from daemon/distccd_argv.py, which models
only what distccd takes for the input and the output: the real distccd then says
whether both were right.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hypothesis import strategies as st

from client import compile_remote
from client.distcc import ClientError
from tests.support.option_samples import sample
from tests.support.servers import Distccd
from tests.support.table_cases import carried, written
from wire import Request
from wire.args import SOURCE_EXTENSIONS, default_table

RECORDING_COMPILER = """#!/bin/sh
# Stands in for a compiler under distccd: records the command line it was given, one
# argument after another each ended by a NUL, and writes a stand-in object where
# distccd looks for one (its own temporary file; nothing else is written).
printf '%s\\0' "$@" > "{records}/$$.argv"
prev=
for arg in "$@"; do
    if [ "$prev" = "-o" ]; then
        case "$arg" in {tmp}/distccd_*.o) echo recorded > "$arg" ;; esac
    fi
    prev=$arg
done
exit 0
"""


def distccd_keeps_local(argv: Sequence[str]) -> str | None:
    """Why Debian's distccd 3.4 runs nothing for ``argv`` (it closes the connection and
    the client compiles locally), or None when it runs the compiler."""
    seen_compile = False
    inputs: list[str] = []
    outputs: list[str] = []
    i = 0
    while i < len(argv):
        arg, following = argv[i], argv[i + 1] if i + 1 < len(argv) else None
        if arg.startswith("-"):
            reason = _scan_refusal(arg, following)
            if reason is not None:
                return reason
            if arg in ("-c", "-S"):
                seen_compile = True
            elif arg in ("-MF", "-MT", "-MQ"):
                i += 1
            elif arg == "-o":
                outputs.append(following or "")
                i += 1
            elif arg.startswith("-o"):
                outputs.append(arg[2:])
        elif _is_source(arg):
            inputs.append(arg)
        elif arg.endswith(".o"):
            outputs.append(arg)
        if len(inputs) > 1:
            return "two inputs"
        if len(outputs) > 1:
            return "two outputs"
        i += 1
    if not seen_compile:
        return "neither -c nor -S"
    if not inputs:
        return "no input"
    if os.path.basename(inputs[0]).startswith(("conftest.", "tmp.conftest.")):
        return "an autoconf test"
    if outputs == ["-"]:
        return "output to stdout"
    if outputs and not any(arg.startswith("-o") for arg in argv):
        return "an output without -o (dcc_set_output finds no -o to replace)"
    if any(arg.startswith(("-fplugin=", "-specs=")) for arg in argv):
        return "-fplugin= or -specs= (serve.c)"
    return None


def _scan_refusal(arg: str, following: str | None) -> str | None:
    """``dcc_scan_args``'s refusals of one argument starting with '-', in its order."""
    if arg == "-E":
        return arg
    if arg in ("-MD", "-MMD", "-MG", "-MP", "-MF", "-MT", "-MQ"):
        return None
    if arg.startswith(("-MF", "-MT", "-MQ")):
        return None
    if arg[1:2] == "M":
        return arg
    if arg in ("-march=native", "-mtune=native", "-flto", "-frepo"):
        return arg
    if arg.startswith("-Wa,"):
        return arg if ",-a" in arg or "--MD" in arg else None
    if arg.startswith("-specs="):
        return arg
    profile = ("-fprofile-arcs", "-ftest-coverage", "--coverage", "-fprofile-correction")
    if arg in profile or arg.startswith(("-fprofile-generate", "-fprofile-use", "-fauto-profile")):
        return arg
    if (
        arg.startswith("-x")
        and following is not None
        and not following.startswith(("c", "objective-c", "go"))
    ):
        return f"{arg} {following}"
    if arg.startswith("-dr"):
        return arg
    return None


def _is_source(arg: str) -> bool:
    dot = arg.rfind(".")
    return dot != -1 and arg[dot + 1 :] in SOURCE_EXTENSIONS


@dataclass
class RecordingDistccd:
    """A real distccd (Debian's 3.4) whose ``gcc`` is :data:`RECORDING_COMPILER`."""

    distccd: Distccd
    records: Path
    tmp: Path

    @classmethod
    def start(cls, root: Path) -> RecordingDistccd:
        """Under ``root`` (a directory distccd's user can enter)."""
        bin_dir, records, tmp = root / "bin", root / "records", root / "tmp"
        for directory, mode in ((bin_dir, 0o755), (records, 0o777), (tmp, 0o777)):
            directory.mkdir()
            directory.chmod(mode)
        compiler = bin_dir / "gcc"
        compiler.write_text(RECORDING_COMPILER.format(records=records, tmp=tmp))
        compiler.chmod(0o755)
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "TMPDIR": str(tmp), "LC_ALL": "C"}
        return cls(Distccd(jobs=2, env=env), records, tmp)

    def stop(self) -> None:
        self.distccd.stop()

    def run(self, argv: Sequence[str], source: bytes = b"int x;\n") -> list[str] | None:
        """Send ``argv`` as a job; the command line the compiler got, or None when
        distccd ran nothing (it closed the connection)."""
        for left in self.records.iterdir():
            left.unlink()
        request = Request(1, tuple(argv), source)
        try:
            reply = asyncio.run(
                compile_remote("127.0.0.1", self.distccd.port, request, timeout_s=60)
            )
        except ClientError:
            reply = None
        records = list(self.records.iterdir())
        assert len(records) <= 1, records
        if not records:
            return None
        assert reply is not None and reply.status == 0, (argv, reply)
        return records[0].read_bytes().decode("utf-8", "surrogateescape").split("\0")[:-1]

    def differences(
        self, sent: Sequence[str], input_index: int, output_index: int | None, got: Sequence[str]
    ) -> list[str]:
        """How ``got`` (what the compiler got) differs from ``sent`` with just the input
        and the output (the value of ``-o``, if any) replaced by distccd's files."""
        problems = []
        if len(got) != len(sent) - 1:
            problems.append(f"{len(got)} arguments, not {len(sent) - 1}")
        temp = re.escape(str(self.tmp)) + r"/distccd_[0-9a-f]{8}"
        for index, (expected, actual) in enumerate(zip(sent[1:], got, strict=False), 1):
            if index == input_index:
                if not re.fullmatch(temp + r"\.(i|ii|mi|mii)", actual):
                    problems.append(f"input {expected!r} became {actual!r}")
            elif index == output_index:
                if not re.fullmatch(temp + r"\.o", actual):
                    problems.append(f"output {expected!r} became {actual!r}")
            elif actual != expected:
                problems.append(f"argument {index} {expected!r} became {actual!r}")
        return problems


HOSTILE_VALUES = (
    "x.c", "dir/y.cc", "z.i", "a.o", "-o", "-ofoo.o", "-MT", "-MQ", "-x", "c++", "NAME=v.c",
    "plain", "-Xlinker", "-c", "-fcompare-debug=-wrapper /bin/sh,-c,id",
)  # fmt: skip
"""Values that would make distccd take an argument for the input, the output or -o."""
HOSTILE_ARGUMENTS = (
    *HOSTILE_VALUES, "-S", "-oz.c", "-Wl,-o,x.c", "-DX=y.c", "-MTx.c", "-Iw.o", "other.c",
)  # fmt: skip
INPUTS = ("in.c", "src/in.cc", "in.i", "/abs/in.mm")


@st.composite
def _option(draw: st.DrawFn) -> list[str]:
    """A line of the table written one way, in a carrier when it is another program's,
    with its sample value or a hostile one."""
    specs = [spec for spec in default_table().specs if spec.kind != "refuse"]
    spec = draw(st.sampled_from(specs))
    value = draw(st.sampled_from((sample(spec), *HOSTILE_VALUES)))
    args = draw(st.sampled_from(written(spec, value)))
    return draw(st.sampled_from(carried(spec.context, args)))


def option_pieces() -> st.SearchStrategy[list[list[str]]]:
    """Up to six options (of the table, in any form and carrier, with hostile values) or
    hostile arguments, each as the arguments it takes."""
    hostile = st.sampled_from(HOSTILE_ARGUMENTS).map(lambda arg: [arg])
    return st.lists(st.one_of(_option(), hostile), max_size=6)


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    """A compile command line: -c, an input, and :func:`option_pieces`, in any order."""
    pieces = draw(option_pieces())
    pieces += [["-c"], [draw(st.sampled_from(INPUTS))]]
    return ["gcc", *(arg for piece in draw(st.permutations(pieces)) for arg in piece)]
