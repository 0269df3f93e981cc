"""clang's --target and -target: distcc's client adds ``-target HOST-TRIPLE`` to every
clang job, so the judge takes Linux targets of the architectures clang 14 assembles
itself, and nothing else: the real clang's -### shows that other targets choose the
assembler clang runs, by a name found on PATH (`T-as` for SPARC, LoongArch, AIX, NaCl
and more, `xcc` for xcore, `orbis-as` for PS4, `nas` for ve: security reviews got each
run through the balancer on a real distccd). Never with -fno-integrated-as."""

from __future__ import annotations

import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from daemon.judge import Judge, Refused

pytestmark = pytest.mark.integration

JUDGE = Judge()
EXTERNAL = ["-fno-integrated-as"]
ARCHS = ["x86_64", "i386", "i686", "aarch64", "aarch64_be", "arm", "armv7a", "armv7l",
         "armv6", "armeb", "thumbv7", "riscv32", "riscv64", "powerpc", "powerpc64",
         "powerpc64le", "ppc64le", "s390x", "mips", "mipsel", "mips64", "mips64el", "m68k",
         "sparc64", "loongarch64", "xcore", "ve", "hexagon", "wasm32"]  # fmt: skip
CRASHING = ["m68k-linux-gnu", "m68k-unknown-linux-gnu"]
"""Targets where clang 14 crashed on a plain _Thread_local (and ran llvm-symbolizer)."""
SYSTEMS = ["-linux-gnu", "-pc-linux-gnu", "-unknown-linux-gnueabihf", "-evil-linux-musl",
           "-linux-android", "-linux-android21", "-linux-gnuabi64", "-linux-musleabihf",
           "-linux-eabi", "-ibm-aix", "-unknown-nacl", "-scei-ps4", "-pc-windows-msvc",
           "-apple-darwin", "-linux-macho", "-unknown-linux-coff", "-linux-xcoff",
           "-linux-wasm", "-linux-goff", ""]  # fmt: skip


def _programs(target: str, extra: list[str], tmp_path: Path) -> list[str]:
    """What clang runs to compile a file for ``target`` (its -### lines), basenames."""
    shown = subprocess.run(["clang", f"--target={target}", *extra, "-c", str(tmp_path / "t.c"),
                            "-o", str(tmp_path / "t.o"), "-###"],
                           capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    found = (re.match(r'\s*"([^"]+)"', line) for line in shown.stderr.splitlines())
    return [os.path.basename(m.group(1)) for m in found if m]


def _taken(argv: list[str]) -> bool:
    try:
        JUDGE.judge(argv)
    except Refused:
        return False
    return True


def test_every_target_the_judge_takes_is_assembled_by_clang_itself(tmp_path: Path) -> None:
    (tmp_path / "t.c").write_text("int x;\n")
    targets = [arch + system for arch in ARCHS for system in SYSTEMS]
    taken = [t for t in targets if _taken(["clang", f"--target={t}", "-c", "t.c"])]
    assert "x86_64-pc-linux-gnu" in taken and len(taken) >= 80, taken  # (distcc's own)
    for target in taken:
        assert _taken(["clang", "-target", target, "-c", "t.c"])
        assert not _taken(["clang", f"--target={target}", *EXTERNAL, "-c", "t.c"])

    def others(target: str) -> list[str]:
        return [p for p in _programs(target, [], tmp_path) if not p.startswith("clang")]

    with ThreadPoolExecutor(4) as pool:
        found = dict(zip(taken, pool.map(others, taken), strict=True))
    assert not {target: programs for target, programs in found.items() if programs}


@pytest.mark.parametrize(("target", "extra", "program"),
                         [("xcore", [], "xcc"), ("ve", EXTERNAL, "nas"),
                          ("x86_64-scei-ps4", EXTERNAL, "orbis-as"),
                          ("x86_64-linux-gnu", EXTERNAL, "x86_64-linux-gnu-as"),
                          ("sparc64-linux-gnu", [], "as"), ("loongarch64-linux-gnu", [], "as"),
                          ("x86_64-evil-aix", [], "as"),
                          # an object format for the environment (a tenth review)
                          ("riscv64-linux-macho", [], "as"),
                          ("s390x-unknown-linux-macho", [], "as")])  # fmt: skip
def test_targets_that_run_an_assembler_from_path_are_refused(
    target: str, extra: list[str], program: str, tmp_path: Path
) -> None:
    (tmp_path / "t.c").write_text("int x;\n")
    assert program in _programs(target, extra, tmp_path)  # (what the refusal stops)
    for argv in (["clang", f"--target={target}", *extra, "-c", "t.c"],
                 ["clang", "-target", target, *extra, "-c", "t.c"]):  # fmt: skip
        with pytest.raises(Refused, match=r"target|-fno-integrated-as"):
            JUDGE.judge(argv)


def test_a_target_clang_crashes_on_is_refused(tmp_path: Path) -> None:
    """clang 14 for m68k crashed on `_Thread_local int t;` and ran llvm-symbolizer, which
    on a real distccd is a program the client chose to run (an eleventh review)."""
    (tmp_path / "t.i").write_text('# 1 "a.c"\n_Thread_local int t;\nint *f(void) { return &t; }\n')
    crashed = subprocess.run(["clang", f"--target={CRASHING[0]}", "-fno-crash-diagnostics",
                              "-c", str(tmp_path / "t.i"), "-o", str(tmp_path / "t.o")],
                             capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert "Stack dump" in crashed.stderr or crashed.returncode not in (0, 1)
    for target in CRASHING:
        assert not _taken(["clang", f"--target={target}", "-c", "t.c"])
