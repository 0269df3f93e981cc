"""Compile command lines as real build systems write them, for the judge's corpus test.

Where the build system is installed here, its lines are taken from it at test time:
CMake's and meson's ``compile_commands.json``, libtool's ``--dry-run``, Debian's
``dpkg-buildflags``. The rest are written in the shape those build systems use
(automake's depcomp, Linux's Kbuild, Fedora's redhat-rpm-config), with the flags
this machine's gcc 12 and clang 14 know.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

C_SOURCE = """\
#include <stdio.h>
#include <string.h>
struct pair { int key; const char *name; };
static inline int twice(int x) { return 2 * x; }
int lookup(const struct pair *pairs, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (strcmp(pairs[i].name, name) == 0)
            return twice(pairs[i].key);
    printf("missing %s\\n", name);
    return -1;
}
"""
CXX_SOURCE = """\
#include <algorithm>
#include <string>
#include <vector>
struct Entry { std::string name; int weight; };
int heaviest(std::vector<Entry> entries) {
    std::sort(entries.begin(), entries.end(),
              [](const Entry &a, const Entry &b) { return a.weight > b.weight; });
    return entries.empty() ? 0 : entries.front().weight;
}
"""
CXX20_SOURCE = """\
#include <concepts>
#include <span>
template <std::integral T> T total(std::span<const T> values) {
    T sum{};
    for (T v : values) sum += v;
    return sum;
}
int total_of(std::span<const int> values) { return total(values); }
"""
# Freestanding, as kernel code is: no libc headers; the -include'd config comes first.
KERNEL_SOURCE = """\
struct task { int pid; long state; };
static int counter;
int task_bump(struct task *t) {
    counter += CONFIG_BUMP;
    t->state |= 1;
    return t->pid + counter;
}
"""
KERNEL_CONFIG = "#define CONFIG_BUMP 3\n"

FEDORA_HARDENED_SPECS = "*cc1_options:\n+ %{!fPIC:%{!fpic:%{!fPIE:%{!fpie:-fPIE}}}}\n"
"""Written for the test in the shape of Fedora's redhat-hardened-cc1 (PIE unless PIC)."""
FEDORA_ANNOBIN_SPECS = "*cc1_options:\n+ -frecord-gcc-switches\n"
"""A stand-in for redhat-annobin-cc1: the real one loads the annobin plugin, which Debian
does not have; this one adds a harmless option the same way."""

KBUILD_FLAGS = (
    "-Wp,-MMD,drivers/demo/.task.o.d -nostdinc -I./include -include ./include/config.h "
    "-D__KERNEL__ -fmacro-prefix-map=./= -Wall -Wundef -Werror=strict-prototypes "
    "-Wno-trigraphs -fno-strict-aliasing -fno-common -fshort-wchar -fno-PIE "
    "-Werror=implicit-function-declaration -Werror=implicit-int -Werror=return-type "
    "-Wno-format-security -funsigned-char -std=gnu11 -mno-sse -mno-mmx -mno-sse2 -mno-3dnow "
    "-mno-avx -fcf-protection=none -m64 -falign-jumps=1 -falign-loops=1 -mno-80387 "
    "-mno-fp-ret-in-387 -mpreferred-stack-boundary=3 -mskip-rax-setup -mtune=generic "
    "-mno-red-zone -mcmodel=kernel -Wno-sign-compare -fno-asynchronous-unwind-tables "
    "-mindirect-branch=thunk-extern -mindirect-branch-register -mfunction-return=thunk-extern "
    "-fno-jump-tables -mharden-sls=all -fpatchable-function-entry=16,16 "
    "-fno-delete-null-pointer-checks -O2 -fno-allow-store-data-races -fstack-protector-strong "
    "-fno-omit-frame-pointer -fno-optimize-sibling-calls -ftrivial-auto-var-init=zero "
    "-fno-stack-clash-protection -fzero-call-used-regs=used-gpr -pg -mrecord-mcount -mfentry "
    "-DCC_USING_FENTRY -falign-functions=16 -fno-strict-overflow -fno-stack-check "
    "-fconserve-stack -Wimplicit-fallthrough=5 -Wno-unused-but-set-variable "
    "-Wno-unused-const-variable -g -gdwarf-5 "
    "-DKBUILD_MODFILE='\"drivers/demo/task\"' -DKBUILD_BASENAME='\"task\"' "
    "-DKBUILD_MODNAME='\"task\"' -D__KBUILD_MODNAME=kmod_task"
)
FEDORA_CFLAGS = (
    "-O2 -flto=auto -ffat-lto-objects -fexceptions -g -grecord-gcc-switches -pipe -Wall "
    "-Werror=format-security -Wp,-U_FORTIFY_SOURCE,-D_FORTIFY_SOURCE=3 "
    "-Wp,-D_GLIBCXX_ASSERTIONS -specs={specs}/redhat-hardened-cc1 -fstack-protector-strong "
    "-specs={specs}/redhat-annobin-cc1 -m64 -march=x86-64-v2 -mtune=generic "
    "-fasynchronous-unwind-tables -fstack-clash-protection -fcf-protection "
    "-fno-omit-frame-pointer -mno-omit-leaf-frame-pointer"
)


@dataclass
class CorpusLine:
    """One compile: ``command`` (with ``{src}`` and ``{out}`` to fill) run in ``cwd``."""

    name: str
    command: list[str]
    cwd: Path
    source: Path
    output: Path
    exception: str | None = None
    """Why distlb refuses this one although distccd compiles it (docs/policy.md)."""
    files: dict[str, str] = field(default_factory=dict)

    def argv(self) -> list[str]:
        return [a.replace("{src}", str(self.source)).replace("{out}", str(self.output))
                for a in self.command]  # fmt: skip


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _hand_written(root: Path, specs_dir: Path) -> list[CorpusLine]:
    c = _write(root / "hand" / "lookup.c", C_SOURCE)
    cxx = _write(root / "hand" / "heaviest.cc", CXX_SOURCE)
    cxx20 = _write(root / "hand" / "total.cc", CXX20_SOURCE)
    kdir = root / "linux"
    ksrc = _write(kdir / "drivers" / "demo" / "task.c", KERNEL_SOURCE)
    _write(kdir / "include" / "config.h", KERNEL_CONFIG)
    (root / "obj").mkdir(exist_ok=True)
    _write(root / "hand" / ".deps" / ".keep", "")
    _write(root / "hand" / ".libs" / ".keep", "")
    hand = root / "hand"
    lines: list[tuple[str, str, Path, str, str | None]] = [
        # name, compiler and flags, source, output (relative to hand/ unless absolute), why not
        ("make-O2", "gcc -O2 -Wall", c, "lookup.o", None),
        ("make-g-O0", "gcc -g -O0", c, "lookup.o", None),
        ("make-gdwarf-4", "gcc -gdwarf-4 -O1", c, "lookup.o", None),
        ("make-g3", "gcc -g3 -O2", c, "lookup.o", None),
        ("make-dash-S", "gcc -O2 -S", c, "lookup.s", None),
        ("make-absolute-output", "gcc -O2", c, str(root / "obj" / "lookup.o"), None),
        ("make-dotdot-output", "gcc -O2", c, "../obj/lookup.o", None),
        ("make-c++20", "g++ -std=c++20 -O2", cxx20, "total.o", None),
        ("make-g++-O2", "g++ -O2 -Wall -Wextra", cxx, "heaviest.o", None),
        ("clang-O2", "clang -O2 -Wall", c, "lookup.o", None),
        ("clang-g", "clang -g -O1", c, "lookup.o", None),
        ("clang++-c++17", "clang++ -std=c++17 -O2", cxx, "heaviest.o", None),
        ("clang++-c++20", "clang++ -std=c++20 -O2", cxx20, "total.o", None),
        ("clang-mllvm", "clang -O2 -mllvm -inline-threshold=100", c, "lookup.o", None),
        ("clang-xclang", "clang -O2 -Xclang -fno-pch-timestamp", c, "lookup.o", None),
        ("make-x-c++", "g++ -x c++ -O2", _write(hand / "asxx.c", CXX_SOURCE), "asxx.o", None),
        ("make-joined-x", "gcc -xc -std=c99 -O2", c, "lookup.o", None),
        ("make-noexecstack", "gcc -O2 -Wa,--noexecstack", c, "lookup.o", None),
        ("automake-depcomp",
         "gcc -DHAVE_CONFIG_H -I. -I.. -g -O2 -MT lookup.o -MD -MP -MF .deps/lookup.Tpo",
         c, "lookup.o", None),
        ("sanitizers", "gcc -g -O1 -fsanitize=address,undefined -fno-omit-frame-pointer",
         c, "lookup.o", None),
        ("embedded-sections", "gcc -Os -ffunction-sections -fdata-sections -fno-common",
         c, "lookup.o", None),
        ("qt-style-visibility",
         "g++ -std=gnu++17 -O2 -fvisibility=hidden -fvisibility-inlines-hidden -fPIC",
         cxx, "heaviest.o", None),
        ("threads", "gcc -pthread -D_REENTRANT -O2 -fstack-protector", c, "lookup.o", None),
        ("strict-warnings", "gcc -std=c11 -Werror -Wextra -Wpedantic -O2", c, "lookup.o", None),
        ("cpython-style", "gcc -fno-strict-overflow -fwrapv -O3 -Wall -fno-semantic-interposition",
         c, "lookup.o", None),
        ("reproducible-prefix-maps",
         f"gcc -g -O2 -fdebug-prefix-map={root}=. -ffile-prefix-map={root}=/src",
         c, "lookup.o", None),
        ("fedora-without-specs",
         FEDORA_CFLAGS.replace("-specs={specs}/redhat-hardened-cc1 ", "").replace(
             "-specs={specs}/redhat-annobin-cc1 ", ""), c, "lookup.o", None),
        ("fedora-redhat-rpm-config", "gcc " + FEDORA_CFLAGS.format(specs=specs_dir),
         c, "lookup.o", None),
        ("fedora-c++", "g++ " + FEDORA_CFLAGS.format(specs=specs_dir), cxx, "heaviest.o",
         None),
        # distcc's client keeps these local itself (profile data, LTO, the local CPU):
        ("lto-plain", "gcc -O2 -flto", c, "lookup.o", None),
        ("march-native", "gcc -O2 -march=native", c, "lookup.o", None),
        ("coverage", "gcc -O0 -fprofile-arcs -ftest-coverage", c, "lookup.o", None),
        # distccd compiles this one and loses the .dwo; distlb refuses it:
        ("split-dwarf", "gcc -g -gsplit-dwarf -O2", c, "lookup.o",
         "leaves the .dwo file on the server, and the object names it by the server's path"),
    ]  # fmt: skip
    corpus = []
    for name, flags, source, output, why in lines:
        if name.startswith("fedora-without"):
            flags = "gcc " + flags
        compiler, *rest = shlex.split(flags)
        out = Path(output) if os.path.isabs(output) else hand / output
        corpus.append(CorpusLine(name, [compiler, *rest, "-c", "{src}", "-o", "{out}"], hand,
                                 source, out, why))  # fmt: skip
    kbuild = [*shlex.split(KBUILD_FLAGS), "-c", "-o", "{out}", "{src}"]
    corpus.append(CorpusLine("kbuild-gcc", ["gcc", *kbuild], kdir, ksrc.relative_to(kdir),
                             kdir / "drivers" / "demo" / "task.o"))  # fmt: skip
    return corpus


def _from_tool(root: Path) -> list[CorpusLine]:
    """Lines taken from libtool's dry run and dpkg-buildflags."""
    lines = []
    work = root / "autotools"
    src = _write(work / "lookup.c", C_SOURCE)
    (work / ".libs").mkdir(exist_ok=True)
    done = subprocess.run(
        ["libtool", "--dry-run", "--tag=CC", "--mode=compile", "gcc", "-DHAVE_CONFIG_H",
         "-I.", "-g", "-O2", "-c", "lookup.c"],
        cwd=work, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    for index, line in enumerate(x for x in done.stdout.splitlines() if "compile:" in x):
        argv = shlex.split(line.split("compile:", 1)[1].split(">", 1)[0])
        out = argv[argv.index("-o") + 1]
        argv[argv.index("lookup.c")] = "{src}"
        argv[argv.index("-o") + 1] = "{out}"
        lines.append(CorpusLine(f"libtool-{index}", argv, work, src, work / out))
    env = {**os.environ, "DEB_BUILD_MAINT_OPTIONS": "hardening=+all"}
    for language, compiler, source in (
        ("CFLAGS", "gcc", src),
        ("CXXFLAGS", "g++", _write(work / "h.cc", CXX_SOURCE)),
    ):
        flags = []
        for var in ("CPPFLAGS", language):
            flags += shlex.split(subprocess.run(
                ["dpkg-buildflags", "--get", var], cwd=work, env=env, capture_output=True,
                text=True, timeout=60, check=True).stdout)  # fmt: skip
        lines.append(CorpusLine(f"dpkg-buildflags-{compiler}",
                                [compiler, *flags, "-c", "{src}", "-o", "{out}"], work, source,
                                work / f"{source.stem}.o"))  # fmt: skip
    return lines


CMAKE_PROJECT = """\
cmake_minimum_required(VERSION 3.16)
project(demo C CXX)
add_library(lookup SHARED lookup.c)
target_compile_definitions(lookup PRIVATE DEMO_SHARED=1)
add_library(heaviest STATIC heaviest.cc)
target_compile_features(heaviest PRIVATE cxx_std_17)
add_executable(total total.cc)
target_compile_features(total PRIVATE cxx_std_20)
"""
MESON_PROJECT = """\
project('demo', 'c', 'cpp', default_options: ['warning_level=2', 'cpp_std=c++20'])
shared_library('lookup', 'lookup.c')
static_library('heaviest', 'heaviest.cc')
"""


def _write_sources(directory: Path) -> None:
    _write(directory / "lookup.c", C_SOURCE)
    _write(directory / "heaviest.cc", CXX_SOURCE)
    _write(directory / "total.cc", CXX20_SOURCE + "int main() { return 0; }\n")


def _compile_commands(name: str, build: Path) -> list[CorpusLine]:
    lines = []
    for entry in json.loads((build / "compile_commands.json").read_text()):
        argv = shlex.split(entry["command"]) if "command" in entry else entry["arguments"]
        source = Path(entry["file"])
        if not source.is_absolute():
            source = Path(entry["directory"]) / source
        out = argv[argv.index("-o") + 1]
        argv = ["{out}" if i > 0 and argv[i - 1] == "-o" else a for i, a in enumerate(argv)]
        argv = ["{src}" if a == entry["file"] else a for a in argv]
        cwd = Path(entry["directory"])
        (cwd / out).parent.mkdir(parents=True, exist_ok=True)
        lines.append(CorpusLine(f"{name}-{source.name}", argv, cwd, source, cwd / out))
    return lines


def _from_cmake_and_meson(root: Path) -> list[CorpusLine]:
    lines = []
    for generator, build_type in (("Ninja", "Release"), ("Unix Makefiles", "Debug"),
                                  ("Ninja", "RelWithDebInfo")):  # fmt: skip
        src = root / f"cmake-{build_type}"
        _write_sources(src)
        _write(src / "CMakeLists.txt", CMAKE_PROJECT)
        build = src / "build"
        subprocess.run(
            ["cmake", "-S", str(src), "-B", str(build), "-G", generator,
             f"-DCMAKE_BUILD_TYPE={build_type}", "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON",
             "-DCMAKE_C_COMPILER=/usr/bin/cc", "-DCMAKE_CXX_COMPILER=/usr/bin/c++"],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        tag = "cmake-" + ("ninja" if generator == "Ninja" else "make") + "-" + build_type
        lines += _compile_commands(tag, build)
    for build_type in ("debug", "release"):
        src = root / f"meson-{build_type}"
        _write_sources(src)
        _write(src / "meson.build", MESON_PROJECT)
        subprocess.run(
            ["meson", "setup", f"--buildtype={build_type}", str(src / "build"), str(src)],
            capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        lines += _compile_commands(f"meson-{build_type}", src / "build")
    return lines


def build_corpus(root: Path, specs_dir: Path) -> list[CorpusLine]:
    """Every line of the corpus, its sources written under ``root``."""
    return _hand_written(root, specs_dir) + _from_tool(root) + _from_cmake_and_meson(root)


def write_trusted_specs(directory: Path) -> None:
    """The two specs files Fedora's flags name, root's and writable by nobody else."""
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    for name, text in (("redhat-hardened-cc1", FEDORA_HARDENED_SPECS),
                       ("redhat-annobin-cc1", FEDORA_ANNOBIN_SPECS)):  # fmt: skip
        path = directory / name
        path.write_text(text)
        path.chmod(0o644)
    directory.chmod(0o755)
