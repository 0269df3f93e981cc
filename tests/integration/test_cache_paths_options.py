"""Every option the judge accepts, against the real compilers: with it (and -O2), the
same tree compiled from two directories must make byte-identical objects (and outcomes)
whenever the two jobs share a key. This is how an option that puts a path into an
object without -g would be found: gcc and clang on a C probe, g++ on a C++ one (a
global with a dynamic initialiser, virtual functions, exceptions, a header).

Options that do something else than compile one file the way the probe needs (an
unknown option for that compiler, a mode, a target the machine lacks) fail in both
directories and are passed over; the test checks that most options were compiled."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.checkouts import compile_as_distcc, include_flags, place
from wire.args import Form, default_table

pytestmark = pytest.mark.integration

C_PROBE = {
    "src/probe.c": '#include "h.h"\nstatic int counter;\nint table[8] = {1, 2, 3};\n'
    "static int helper(int x) { return twice(x) * H; }\n"
    "int api(int i) { counter += helper(i); return table[i & 7] + counter; }\n"
    "int main(void) { return api(3); }\n",
    "include/h.h": "#define H 3\nstatic inline int twice(int x) { return 2 * x; }\n",
}
CXX_PROBE = {
    "src/probe.cc": '#include "h.h"\n'
    "struct Base { virtual ~Base() {} virtual int f() const { return H; } };\n"
    "struct Derived : Base { int f() const override { return twice(H); } };\n"
    "static Derived d;\nstatic int v = d.f();\n"
    "template <class T> T add(T x) { return x + x; }\n"
    "int api(int i) { if (i < 0) throw i; return add(i) + v; }\n"
    "int main() { try { return api(3); } catch (int) { return 1; } }\n",
    "include/h.h": "#define H 3\nstatic inline int twice(int x) { return 2 * x; }\n",
}
PROBES = {"gcc": (C_PROBE, "src/probe.c"), "clang": (C_PROBE, "src/probe.c"),
          "g++": (CXX_PROBE, "src/probe.cc")}  # fmt: skip
"""(clang++ shares clang's code generation; its C++-only way a name reaches an object,
_GLOBAL__sub_I_<basename>, is tested in test_cache_paths_gcc.py. Three compilers over
a thousand options take about two minutes on two cores.)"""
SAMPLES = ["-Wall", "-Wextra", "-Werror", "-Wpedantic", "-mavx2", "-mno-red-zone",
           "-march=x86-64-v2", "-std=c11", "-std=gnu17", "-std=c++17", "-std=gnu++20",
           "-frandom-seed=x", "-fsanitize=address", "-fsanitize=undefined",
           "-fsanitize-coverage=trace-pc", "-flto", "-flto=thin", "-O0", "-O1", "-O3", "-Os",
           "-Og", "-Oz", "-Ofast"]  # fmt: skip
SKIPPED = {"-c", "-S", "--compile", "--assemble"}


def _options() -> list[str]:
    """The judge's driver options that are whole in themselves (flags, and joined ones
    with a fixed set of values), and samples of the rest."""
    found = []
    for spec in default_table().specs:
        if spec.context != "driver" or spec.kind == "refuse" or spec.spelling in SKIPPED:
            continue
        if spec.form is Form.FLAG:
            found.append(spec.spelling)
        elif spec.form is Form.JOINED and spec.kind.startswith("choice:"):
            found += [spec.spelling + value for value in spec.kind[7:].split("|")]
    return sorted(set(found)) + SAMPLES


def _check(tmp_path: Path, compiler: str, option: str) -> str | None:
    """None when the two checkouts' jobs keep the rule (or the option does not compile
    the probe), else what broke it. 'compiled' when both compiled and shared a key."""
    tree, main = PROBES[compiler]
    results = []
    work = tmp_path / f"{compiler}{abs(hash(option))}"
    for who in ("alice/proj", "carol/work/elsewhere/tree"):
        root = place(work / who, tree)
        try:
            results.append(compile_as_distcc(compiler, ["-O2", option], root, main,
                                             work / f"server-{who[0]}",
                                             cpp_flags=include_flags(root, True)))  # fmt: skip
        except AssertionError:
            return None  # (preprocessing failed: the option is not this compiler's)
    a, b = results
    if a.key != b.key:
        return None
    if a.status != b.status or a.obj != b.obj:
        return f"{compiler} {option}: one key, but {a.status}/{b.status}, objects differ"
    return "compiled" if a.status == 0 else None


def test_no_accepted_option_lets_a_path_into_an_object_the_key_shares(tmp_path: Path) -> None:
    cases = [(compiler, option) for compiler in PROBES for option in _options()]
    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(lambda case: _check(tmp_path, *case), cases))
    broken = [o for o in outcomes if o not in (None, "compiled")]
    assert broken == []
    compiled = outcomes.count("compiled")
    assert compiled >= 0.5 * len(cases), (compiled, len(cases))
