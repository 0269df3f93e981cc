"""clang's --target is refused (an operator may allow exact triples with
--allow-option): the real clang's -### shows that the target chooses which assembler it
runs, by a name found on PATH (`T-as` for the many targets clang 14 assembles with an
outside assembler, `xcc` for xcore, `orbis-as` for PS4, `nas` for ve), and the client
chooses the target (security reviews found each of these through the balancer on a
real distccd). Never with -fno-integrated-as, even when an operator allows a target."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from daemon.judge import Judge, Refused

pytestmark = pytest.mark.integration

JUDGE = Judge()
EXTERNAL = ["-fno-integrated-as"]


def _programs(target: str, extra: list[str], tmp_path: Path) -> list[str]:
    """What clang runs to compile a file for ``target`` (its -### lines), full paths."""
    source = tmp_path / "t.c"
    source.write_text("int x;\n")
    shown = subprocess.run(["clang", f"--target={target}", *extra, "-c", str(source), "-o",
                            str(tmp_path / "t.o"), "-###"],
                           capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    found = (re.match(r'\s*"([^"]+)"', line) for line in shown.stderr.splitlines())
    return [m.group(1) for m in found if m]


@pytest.mark.parametrize(("target", "extra", "program"),
                         [("xcore", [], "xcc"), ("ve", EXTERNAL, "nas"),
                          ("x86_64-scei-ps4", EXTERNAL, "orbis-as"),
                          ("x86_64-linux-gnu", EXTERNAL, "x86_64-linux-gnu-as"),
                          ("sparc-evil-linux-gnu", [], "as"),
                          ("x86_64-evil-aix", [], "as")])  # fmt: skip
def test_a_target_chooses_the_program_clang_runs_and_is_refused(
    target: str, extra: list[str], program: str, tmp_path: Path
) -> None:
    run = [os.path.basename(p) for p in _programs(target, extra, tmp_path)]
    assert program in run, run  # (what the refusal stops: for "as", the T-as PATH lookup)
    for argv in (["clang", f"--target={target}", *extra, "-c", "t.c"],
                 ["clang", "-target", target, *extra, "-c", "t.c"]):  # fmt: skip
        with pytest.raises(Refused, match="target"):
            JUDGE.judge(argv)


def test_an_operators_target_is_taken_but_never_with_an_outside_assembler() -> None:
    judge = Judge(allow_options=["--target=aarch64-linux-gnu"])
    judge.judge(["clang", "--target=aarch64-linux-gnu", "-c", "t.c"])
    with pytest.raises(Refused, match="-fno-integrated-as"):
        judge.judge(["clang", "--target=aarch64-linux-gnu", *EXTERNAL, "-c", "t.c"])
