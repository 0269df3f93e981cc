"""Every option the judge accepts, against the real compilers: with it (and -O2), the
same tree compiled from two directories must make byte-identical objects (and outcomes)
whenever the two jobs share a key. This is how an option that puts a path into an
object without -g would be found: gcc and clang on a C probe, g++ on a C++ one (a
global with a dynamic initialiser, virtual functions, exceptions, a header).

Options that do something else than compile one file the way the probe needs (an
unknown option for that compiler, a mode, a target the machine lacks) fail in both
directories and are passed over; the test checks that most options were compiled.

The options go in batches (a compile per option took two minutes): a batch that
compiles in both directories with one key and identical objects clears all its
options; any other outcome splits it in halves, down to single options. A batch never
holds two options of one family (-fX and -fno-X, two -O levels, two -std=), so that
no option in it can undo another's effect on the object. Before that, the options a
compiler rejects as unknown, unrecognised or unsupported (it names them all in one
run) are passed over without a batch."""

from __future__ import annotations

import itertools
import re
import subprocess
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
BATCH = 12
_RUNS = itertools.count()


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


def _family(option: str) -> str:
    """Options that may override one another: -fX/-fno-X (-m, -W alike), the -O
    levels, the -g levels, one name with different =values."""
    name = option.split("=", 1)[0]
    if re.fullmatch(r"-O.*", name) or re.fullmatch(r"-g.*", name):
        return name[:2]
    return re.sub(r"^-([fmW])(no-)?", r"-\1", name)


def _batches(options: list[str]) -> list[list[str]]:
    batches: list[list[str]] = []
    families: list[set[str]] = []
    for option in options:
        family = _family(option)
        for batch, taken in zip(batches, families, strict=True):
            if len(batch) < BATCH and family not in taken:
                batch.append(option)
                taken.add(family)
                break
        else:
            batches.append([option])
            families.append({family})
    return batches


def _known(tmp_path: Path, compiler: str, options: list[str]) -> list[str]:
    """``options`` less those the compiler names as unknown, unrecognised or unsupported
    when given them all on the probe: they fail alone in both directories anyway."""
    tree, main = PROBES[compiler]
    root = place(tmp_path / f"{compiler}-known", tree)
    left = list(options)
    while True:
        run = subprocess.run([compiler, "-O2", *left, *include_flags(root, True), "-c", main,
                              "-o", "/dev/null"], cwd=root, capture_output=True, text=True,
                             timeout=120, check=False)  # fmt: skip
        rejections = [line for line in run.stderr.splitlines() if "error" in line
                      and re.search("unknown|unrecognized|unsupported", line)]  # fmt: skip
        # (the first quoted name is the rejected one: "...; did you mean '-fX'?" follows)
        named = {found.group(1) for line in rejections
                 if (found := re.search(r"['\u2018]([^'\u2019]{3,})['\u2019]", line))}  # fmt: skip
        # (gcc may name a bad value alone: "unrecognized debug output level 'embed-source'")
        dropped = [o for o in left if any(o in (name, f"-g{name}") or o.endswith(f"={name}")
                                          for name in named)]  # fmt: skip
        if not dropped:
            return left
        left = [o for o in left if o not in dropped]


def _check(tmp_path: Path, compiler: str, options: list[str]) -> str | None:
    """None when the two checkouts' jobs keep the rule (or the options do not compile
    the probe), else what broke it. 'compiled' when both compiled and shared a key."""
    tree, main = PROBES[compiler]
    results = []
    work = tmp_path / f"{compiler}-{next(_RUNS)}"
    for who in ("alice/proj", "carol/work/elsewhere/tree"):
        root = place(work / who, tree)
        try:
            results.append(compile_as_distcc(compiler, ["-O2", *options], root, main,
                                             work / f"server-{who[0]}",
                                             cpp_flags=include_flags(root, True)))  # fmt: skip
        except AssertionError:
            return None  # (preprocessing failed: the option is not this compiler's)
    a, b = results
    if a.key != b.key:
        return None
    if a.status != b.status or a.obj != b.obj:
        return f"{compiler} {options}: one key, but {a.status}/{b.status}, objects differ"
    return "compiled" if a.status == 0 else None


def _sweep(tmp_path: Path, compiler: str, options: list[str]) -> list[str | None]:
    """Each option's outcome (see _check), a batch's when it compiled and kept the
    rule; a batch that broke it is reported too, even if no half of it does."""
    outcome = _check(tmp_path, compiler, options)
    if outcome == "compiled" or len(options) == 1:
        return [outcome] * len(options)
    half = len(options) // 2
    found = [outcome] if outcome is not None else []
    return (found + _sweep(tmp_path, compiler, options[:half])
            + _sweep(tmp_path, compiler, options[half:]))  # fmt: skip


def test_no_accepted_option_lets_a_path_into_an_object_the_key_shares(tmp_path: Path) -> None:
    options = _options()
    cases = [(compiler, batch) for compiler in PROBES
             for batch in _batches(_known(tmp_path, compiler, options))]  # fmt: skip
    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = [o for found in pool.map(lambda c: _sweep(tmp_path, *c), cases) for o in found]
    broken = [o for o in outcomes if o not in (None, "compiled")]
    assert broken == []
    compiled = outcomes.count("compiled")
    assert compiled >= 0.5 * len(PROBES) * len(options), (compiled, len(options))
