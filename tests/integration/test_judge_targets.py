"""The judge takes clang's --target only for architectures and systems whose compiles
run nothing but clang itself and the toolchain's assembler, proved with the real
clang's -###, and never with -fno-integrated-as: for xcore clang runs ``xcc``, for ve
``nas``, for PS4 ``orbis-as``, and with -fno-integrated-as the target's own assembler,
found on PATH (security reviews)."""

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
         "hexagon", "xcore", "ve"]  # fmt: skip
SYSTEMS = ("", "-linux-gnu", "-apple-darwin", "-w64-mingw32", "-ibm-aix", "-scei-ps4",
           "-unknown-ps4", "-sie-ps5", "-pc-windows-msvc", "-unknown-freebsd")  # fmt: skip
TOOLCHAIN = re.compile(r"clang(?:-[0-9.]+)?|as|llvm-mc")
JUDGE = Judge()


def _programs(target: str, extra: list[str], tmp_path: Path) -> set[str]:
    """What clang runs to compile a file for ``target`` (its -### lines)."""
    source = tmp_path / "t.c"
    shown = subprocess.run(["clang", f"--target={target}", *extra, "-c", str(source), "-o",
                            str(tmp_path / "t.o"), "-###"],
                           capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    found = (re.match(r'\s*"([^"]+)"', line) for line in shown.stderr.splitlines())
    return {os.path.basename(m.group(1)) for m in found if m}


def _taken(argv: list[str]) -> bool:
    try:
        JUDGE.judge(argv)
    except Refused:
        return False
    return True


def test_every_target_the_judge_takes_runs_only_the_toolchain(tmp_path: Path) -> None:
    (tmp_path / "t.c").write_text("int x;\n")
    targets = [arch + system for arch in ARCHS for system in SYSTEMS]
    taken = [t for t in targets if _taken(["clang", f"--target={t}", "-c", "t.c"])]
    assert len(taken) >= 250, len(taken)  # (the list is not made empty to pass)
    for target in taken:
        assert not _taken(["clang", f"--target={target}", "-fno-integrated-as", "-c", "t.c"])

    def others(target: str) -> set[str]:
        return {p for p in _programs(target, [], tmp_path) if not TOOLCHAIN.fullmatch(p)}

    with ThreadPoolExecutor(4) as pool:
        found = dict(zip(taken, pool.map(others, taken), strict=True))
    assert not {target: programs for target, programs in found.items() if programs}


EXTERNAL = ["-fno-integrated-as"]


@pytest.mark.parametrize(("target", "extra", "program"),
                         [("xcore", [], "xcc"), ("ve", EXTERNAL, "nas"),
                          ("x86_64-scei-ps4", EXTERNAL, "orbis-as"),
                          ("x86_64-linux-gnu", EXTERNAL, "x86_64-linux-gnu-as")])  # fmt: skip
def test_targets_that_run_other_programs_are_refused(
    target: str, extra: list[str], program: str, tmp_path: Path
) -> None:
    (tmp_path / "t.c").write_text("int x;\n")
    assert program in _programs(target, extra, tmp_path)  # (what the refusal stops)
    for argv in (["clang", f"--target={target}", *extra, "-c", "t.c"],
                 ["clang", "-target", target, *extra, "-c", "t.c"]):  # fmt: skip
        with pytest.raises(Refused, match="target"):
            JUDGE.judge(argv)
