"""The judge takes clang's --target only for architectures whose compiles run nothing
but the compiler and an assembler of the toolchain, proved with the real clang's -###:
for xcore it runs ``xcc``, for ve (with -fno-integrated-as) ``nas``, found on PATH
(a second security review)."""

from __future__ import annotations

import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from daemon.judge import Judge, Refused

pytestmark = pytest.mark.integration

ARCHS = ["x86_64", "amd64", "i386", "i686", "aarch64", "aarch64_be", "arm64", "arm", "armv7a",
         "armeb", "thumb", "thumbv7m", "riscv32", "riscv64", "powerpc", "powerpc64",
         "powerpc64le", "ppc", "ppc64le", "s390x", "mips", "mipsel", "mips64", "mips64el",
         "wasm32", "wasm64", "bpf", "bpfel", "bpfeb", "sparc", "sparcv9", "sparcel",
         "loongarch64", "m68k", "avr", "msp430", "lanai", "nvptx", "nvptx64", "amdgcn", "r600",
         "hexagon"]  # fmt: skip
SYSTEMS = ("", "-linux-gnu", "-apple-darwin", "-w64-mingw32", "-ibm-aix")
TOOLCHAIN = re.compile(r"clang(?:-[0-9.]+)?|as|llvm-mc|.+-as")
JUDGE = Judge()


def _programs(target: str, extra: list[str], tmp_path: Path) -> set[str]:
    """What clang runs to compile a file for ``target`` (its -### lines)."""
    source = tmp_path / "t.c"
    source.write_text("int x;\n")
    shown = subprocess.run(["clang", f"--target={target}", *extra, "-c", str(source), "-o",
                            str(tmp_path / "t.o"), "-###"],
                           capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    found = (re.match(r'\s*"([^"]+)"', line) for line in shown.stderr.splitlines())
    return {os.path.basename(m.group(1)) for m in found if m}


def test_every_target_the_judge_takes_runs_only_the_toolchain(tmp_path: Path) -> None:
    cases = [(arch + system, extra) for arch in ARCHS for system in SYSTEMS
             for extra in ([], ["-fno-integrated-as"])]  # fmt: skip
    for target, _ in cases:
        JUDGE.judge(["clang", f"--target={target}", "-fno-integrated-as", "-c", "t.c"])

    def others(case: tuple[str, list[str]]) -> set[str]:
        return {p for p in _programs(*case, tmp_path) if not TOOLCHAIN.fullmatch(p)}

    with ThreadPoolExecutor(4) as pool:
        found = dict(zip((f"{t} {' '.join(e)}" for t, e in cases), pool.map(others, cases),
                         strict=True))  # fmt: skip
    assert not {case: programs for case, programs in found.items() if programs}


@pytest.mark.parametrize(("target", "extra", "program"),
                         [("xcore", [], "xcc"), ("ve", ["-fno-integrated-as"], "nas")])  # fmt: skip
def test_targets_that_run_other_programs_are_refused(
    target: str, extra: list[str], program: str, tmp_path: Path
) -> None:
    assert program in _programs(target, extra, tmp_path)  # (what the refusal stops)
    for argv in (["clang", f"--target={target}", "-c", "t.c"],
                 ["clang", "-target", target, "-c", "t.c"]):  # fmt: skip
        with pytest.raises(Refused, match="target triple"):
            JUDGE.judge(argv)
