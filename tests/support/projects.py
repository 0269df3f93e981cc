"""Small but real multi-file C and C++ programs, with Makefiles, for end-to-end builds."""

from __future__ import annotations

import subprocess
from pathlib import Path

C_MODULES = 8
# No -g by default: preprocessing expands macros, which shifts debug line and column
# info, so with -g even real distccd's objects differ from a local compile. With -g,
# distlb's objects are compared with distccd's instead (see docs/decisions.md).
CFLAGS = "-O2 -Wall"

_MAKEFILE = """\
CC ?= gcc
CXX ?= g++
CFLAGS ?= {cflags}
OBJS = {objs}
all: {prog}
{prog}: $(OBJS)
\t{link} -o $@ $(OBJS)
%.o: %.c
\t$(CC) {cflags} -c $< -o $@
%.o: %.cc
\t$(CXX) {cflags} -c $< -o $@
"""


def write_c_project(root: Path, modules: int = C_MODULES) -> Path:
    """main.c plus ``modules`` modules; the program prints the sum of their results."""
    root.mkdir(parents=True)
    header = ["#pragma once", "#include <stddef.h>"]
    calls = []
    for i in range(modules):
        header.append(f"long module_{i}(long seed);")
        (root / f"mod{i}.c").write_text(
            f"""#include <stdio.h>
#include <string.h>
#include "prog.h"
struct item_{i} {{ long key; char name[16]; }};
static long mix_{i}(long x) {{ return (x * {i + 3}) ^ (x >> {i % 5 + 1}); }}
long module_{i}(long seed) {{
    struct item_{i} items[{i + 4}];
    long total = 0;
    for (size_t k = 0; k < sizeof items / sizeof items[0]; k++) {{
        items[k].key = mix_{i}(seed + (long)k);
        snprintf(items[k].name, sizeof items[k].name, "m{i}-%zu", k);
        total += items[k].key % 1000 + (long)strlen(items[k].name);
    }}
    return total;
}}
"""
        )
        calls.append(f"    total += module_{i}({i + 1});")
    (root / "prog.h").write_text("\n".join(header) + "\n")
    (root / "main.c").write_text(
        '#include <stdio.h>\n#include "prog.h"\nint main(void) {\n    long total = 0;\n'
        + "\n".join(calls)
        + '\n    printf("total=%ld\\n", total);\n    return 0;\n}\n'
    )
    objs = " ".join(["main.o", *(f"mod{i}.o" for i in range(modules))])
    (root / "Makefile").write_text(
        _MAKEFILE.format(objs=objs, prog="prog", link="$(CC)", cflags=CFLAGS)
    )
    return root


def write_cpp_project(root: Path) -> Path:
    """A C++ program using the standard library (large .ii files, good LZO traffic)."""
    root.mkdir(parents=True)
    (root / "shapes.h").write_text(
        """#pragma once
#include <memory>
#include <string>
#include <vector>
struct Shape { virtual ~Shape() = default; virtual double area() const = 0;
               virtual std::string name() const = 0; };
std::vector<std::unique_ptr<Shape>> make_shapes(int n);
"""
    )
    (root / "shapes.cc").write_text(
        """#include "shapes.h"
#include <cmath>
namespace {
struct Square : Shape { double s; explicit Square(double s) : s(s) {}
  double area() const override { return s * s; } std::string name() const override { return "square"; } };
struct Circle : Shape { double r; explicit Circle(double r) : r(r) {}
  double area() const override { return M_PI * r * r; } std::string name() const override { return "circle"; } };
}
std::vector<std::unique_ptr<Shape>> make_shapes(int n) {
  std::vector<std::unique_ptr<Shape>> out;
  for (int i = 1; i <= n; ++i) {
    if (i % 2) out.push_back(std::make_unique<Square>(i)); else out.push_back(std::make_unique<Circle>(i));
  }
  return out;
}
"""
    )
    (root / "main.cc").write_text(
        """#include "shapes.h"
#include <iostream>
#include <map>
#include <algorithm>
int main() {
  std::map<std::string, double> by_name;
  for (const auto& s : make_shapes(10)) by_name[s->name()] += s->area();
  std::cout << "kinds=" << by_name.size() << " squares=" << static_cast<long>(by_name["square"]) << "\\n";
  return 0;
}
"""
    )
    (root / "Makefile").write_text(
        _MAKEFILE.format(objs="main.o shapes.o", prog="prog", link="$(CXX)", cflags=CFLAGS)
    )
    return root


def sources(project: Path) -> list[Path]:
    return sorted([*project.glob("*.c"), *project.glob("*.cc")])


def local_object(project: Path, source: Path, compiler: str, cflags: str = CFLAGS) -> bytes:
    """The object a plain local compile of ``source`` produces, with the project's flags."""
    out = project / ".local" / (source.stem + ".o")
    out.parent.mkdir(exist_ok=True)
    subprocess.run(
        [compiler, *cflags.split(), "-c", source.name, "-o", str(out.relative_to(project))],
        cwd=project,
        check=True,
    )
    return out.read_bytes()


def assert_identical_to_local(project: Path, compiler: str = "gcc") -> None:
    """Every object a build left in ``project`` equals a local compile of its source."""
    for source in sources(project):
        remote = (project / (source.stem + ".o")).read_bytes()
        assert remote == local_object(project, source, compiler), f"{source.name} differs"


TREE_MAKEFILE = """\
ROOT := $(CURDIR)
CC ?= gcc
CFLAGS ?= -O2 -Wall
SRCS := $(sort $(wildcard $(ROOT)/src/*.c $(ROOT)/lib/*/*.c))
OBJS := $(patsubst $(ROOT)/%.c,obj/%.o,$(SRCS))
prog: $(OBJS)
\t$(CC) -o $@ $(OBJS)
obj/%.o: $(ROOT)/%.c
\t@mkdir -p $(dir $@)
\t$(CC) $(CFLAGS) -I$(ROOT)/include -c $< -o $@
"""
"""As CMake builds: every file named by its absolute path, objects in a directory of
their own; ``CFLAGS`` may name ``$(ROOT)``, the checkout (``-ffile-prefix-map=$(ROOT)=.``)."""


def write_tree_project(root: Path, libraries: int = 3, modules: int = 6) -> Path:
    """A program in src/ over ``libraries`` libraries (lib/NAME/, ``modules`` files each)
    and shared headers in include/, one of which warns under -Wall in every file that
    includes it (the warnings a hit replays name the builder's own files)."""
    (root / "include").mkdir(parents=True)
    (root / "src").mkdir()
    (root / "include" / "common.h").write_text(
        "#pragma once\n#include <stddef.h>\n"
        "static inline long scaled(long x) { int unused_here; return x * 3; }\n"
    )
    calls, declarations = [], []
    for lib in range(libraries):
        directory = root / "lib" / f"part{lib}"
        directory.mkdir(parents=True)
        for module in range(modules):
            name = f"p{lib}_m{module}"
            declarations.append(f"long {name}(long seed);")
            (directory / f"{name}.c").write_text(
                f'#include <string.h>\n#include "common.h"\n#include "parts.h"\n'
                f"long {name}(long seed) {{\n"
                f'    char label[24] = "{name}";\n'
                f"    long total = scaled(seed) + (long)strlen(label);\n"
                f"    for (long k = 0; k < {module + 3}; k++) total += (total >> {lib + 1}) ^ k;\n"
                f"    return total;\n}}\n"
            )
            calls.append(f"    total += {name}({lib * modules + module + 1});")
    (root / "include" / "parts.h").write_text("#pragma once\n" + "\n".join(declarations) + "\n")
    (root / "src" / "main.c").write_text(
        '#include <stdio.h>\n#include "common.h"\n#include "parts.h"\n'
        "int main(void) {\n    long total = 0;\n"
        + "\n".join(calls)
        + '\n    printf("total=%ld\\n", total);\n    return 0;\n}\n'
    )
    (root / "Makefile").write_text(TREE_MAKEFILE)
    return root


def tree_sources(project: Path) -> list[Path]:
    return sorted([*(project / "src").glob("*.c"), *(project / "lib").glob("*/*.c")])


def tree_object(project: Path, source: Path) -> Path:
    return project / "obj" / source.relative_to(project).with_suffix(".o")
