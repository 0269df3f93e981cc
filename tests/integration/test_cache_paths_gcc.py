"""Issue 27: keys that do not depend on where a tree is checked out, proved against the
real compilers. Each case places the same sources in two directories (different paths,
different depths), preprocesses each from its own directory as the distcc client does
(absolute names, as CMake gives them, and relative ones, as make does), compiles each
text as a server does, and sets what the key says beside what the compiler made:

- the key may treat two jobs as one ONLY where their objects are byte-identical (every
  case asserts it);
- where the issue asks for sharing (no debug info; debug info with prefix maps, gcc),
  the keys are equal, and the objects are what a local compile in each directory makes;
- the known ways a path reaches an object without -g keep the jobs apart: the main
  file's basename (STT_FILE, clang's _GLOBAL__sub_I_), __builtin_FILE,
  std::source_location, sanitizers, LTO, -fverbose-asm, a prefix map that renames a
  basename, clang's OpenMP locations with debug info.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from cache import cache_key, job_digest
from cache.stderr_paths import rewrite
from tests.support.checkouts import (
    DEBUG_SECTIONS,
    JUDGE,
    Compiled,
    compile_as_distcc,
    differing_sections,
    identity,
    include_flags,
    local_object,
    place,
)

pytestmark = pytest.mark.integration

C_TREE = {
    "src/main.c": '#include <stdio.h>\n#include "util.h"\nstatic int counter;\n'
    'int main(void) { printf("%d\\n", twice(counter) + LIMIT); return 0; }\n',
    "include/util.h": "#define LIMIT 3\nstatic inline int twice(int x) { return 2 * x; }\n",
}
CXX_TREE = {
    "src/main.cc": '#include <string>\n#include <cstdio>\n#include "util.h"\n'
    'static std::string name = "x";\nstatic int init() { return LIMIT; }\nstatic int v = init();\n'
    'int main() { std::printf("%s %d\\n", name.c_str(), v); }\n',
    "include/util.h": "#define LIMIT 3\n",
}
TREES = {"gcc": C_TREE, "clang": C_TREE, "g++": CXX_TREE, "clang++": CXX_TREE}
MAIN = {"gcc": "src/main.c", "clang": "src/main.c", "g++": "src/main.cc", "clang++": "src/main.cc"}
ALICE, CAROL = "alice/proj", "carol/work/elsewhere/tree"


def _pair(
    tmp_path: Path,
    compiler: str,
    flags: list[str] | None = None,
    *,
    tree: dict[str, str] | None = None,
    main: str | None = None,
    absolute: bool = True,
    share: bool = False,
    mode: str = "-c",
    mains: tuple[str, str] | None = None,
    flags_for: Callable[[Path], list[str]] | None = None,
) -> tuple[Compiled, Compiled, list[Path]]:
    """The same tree in Alice's and Carol's directories, each compiled as distcc does."""
    tree = tree or TREES[compiler]
    main = main or MAIN[compiler]
    out, roots = [], []
    for index, who in enumerate((ALICE, CAROL)):
        root = place(tmp_path / who, tree)
        mine = main
        if mains is not None and mains[index] != main:
            mine = mains[index]
            (root / main).rename(root / mine)
        own = list(flags or [])
        if flags_for is not None:
            own += flags_for(root)
        server = tmp_path / "server"
        compiled = compile_as_distcc(compiler, own, root, mine, server, absolute=absolute,
                                     share_across_dirs=share, mode=mode,
                                     cpp_flags=include_flags(root, absolute))  # fmt: skip
        out.append(compiled)
        roots.append(root)
    a, b = out
    assert a.status == 0 and b.status == 0, (a.stderr, b.stderr)
    # The one rule every case obeys: one key, one object (unless sharing was opted into).
    if a.key == b.key and not share:
        assert a.obj == b.obj, f"{compiler} {flags}: one key, two objects"
    return a, b, roots


@pytest.mark.parametrize("absolute", [True, False], ids=["absolute", "relative"])
@pytest.mark.parametrize("compiler", ["gcc", "g++", "clang", "clang++"])
@pytest.mark.parametrize("flags", [[], ["-O2"], ["-O2", "-DNDEBUG", "-fPIC"]], ids=str)
def test_without_debug_info_two_checkouts_share_one_key_and_one_object(
    tmp_path: Path, compiler: str, flags: list[str], absolute: bool
) -> None:
    a, b, roots = _pair(tmp_path, compiler, flags, absolute=absolute)
    if absolute:
        assert a.text != b.text  # (the markers name each checkout's files)
    assert a.key == b.key
    assert a.obj == b.obj
    for compiled, root in zip((a, b), roots, strict=True):
        assert compiled.obj == local_object(compiler, flags, root, MAIN[compiler], absolute)


@pytest.mark.parametrize("compiler", ["gcc", "g++"])
@pytest.mark.parametrize("absolute", [True, False], ids=["absolute", "relative"])
@pytest.mark.parametrize("option", ["-ffile-prefix-map", "-fdebug-prefix-map"])
def test_debug_info_with_prefix_maps_shares_and_each_object_is_its_own_local_one(
    tmp_path: Path, compiler: str, absolute: bool, option: str
) -> None:
    flags = ["-g", "-O2"]
    a, b, roots = _pair(tmp_path, compiler, flags, absolute=absolute,
                        flags_for=lambda root: [f"{option}={root}=."])  # fmt: skip
    assert a.key == b.key and a.obj == b.obj
    for compiled, root in zip((a, b), roots, strict=True):
        mine = [*flags, f"{option}={root}=."]
        assert compiled.obj == local_object(compiler, mine, root, MAIN[compiler], absolute,
                                            two_step=True)  # fmt: skip


@pytest.mark.parametrize("compiler", ["gcc", "g++", "clang", "clang++"])
def test_debug_info_without_maps_keeps_checkouts_apart_unless_shared_on_purpose(
    tmp_path: Path, compiler: str
) -> None:
    a, b, _ = _pair(tmp_path, compiler, ["-g"])
    assert a.key != b.key and a.obj != b.obj
    assert differing_sections(a.obj, b.obj, tmp_path) <= _debug_sections(a.obj, b.obj, tmp_path)
    shared_a, shared_b, _ = _pair(tmp_path, compiler, ["-g"], share=True)
    if compiler in ("gcc", "g++"):
        # Opted in: one key, and the objects differ in their debug info only (the
        # directories they record): Carol would get Alice's.
        assert shared_a.key == shared_b.key
    # clang records the server's directory, and no working-directory marker tells the
    # checkout's: its absolute paths stay in the key.
    differ = differing_sections(shared_a.obj, shared_b.obj, tmp_path)
    assert differ and all(name.startswith(DEBUG_SECTIONS) for name in differ), differ


def _debug_sections(a: bytes, b: bytes, scratch: Path) -> set[str]:
    return {n for n in differing_sections(a, b, scratch) if n.startswith(DEBUG_SECTIONS)}


def test_clang_with_debug_maps_keeps_the_exact_key(tmp_path: Path) -> None:
    """The prefix-map rule is gcc's (it reads the working directory from the text);
    clang's jobs keep their paths in the key, though here its objects would match."""
    a, b, _ = _pair(
        tmp_path, "clang", ["-g"], flags_for=lambda root: [f"-ffile-prefix-map={root}=."]
    )
    assert a.key != b.key


@pytest.mark.parametrize("compiler", ["gcc", "g++", "clang", "clang++"])
def test_the_main_files_basename_reaches_the_object(tmp_path: Path, compiler: str) -> None:
    """Same text, same directory layout, main file named apart: STT_FILE (and clang's
    _GLOBAL__sub_I_<name>) name it, so the keys differ."""
    main = MAIN[compiler]
    other = main.replace("main.", "other.")
    a, b, _ = _pair(tmp_path, compiler, [], mains=(main, other))
    assert a.obj != b.obj and a.key != b.key


C_FILE = {"src/main.c": "const char *f(void) { return __builtin_FILE(); }\n"}
CXX_FILE = {
    "src/main.cc": "const char *f(const char *w = __builtin_FILE()) { return w; }\n"
    "const char *g() { return f(); }\n"
}
LOCATION = {
    "src/main.cc": "#include <source_location>\n"
    "const char *g() { return std::source_location::current().file_name(); }\n"
}
BUILTIN_FILE: dict[str, tuple[dict[str, str], str, list[str]]] = {
    "gcc": (C_FILE, "src/main.c", []),
    "clang": (C_FILE, "src/main.c", []),
    "g++": (CXX_FILE, "src/main.cc", []),
    "clang++": (CXX_FILE, "src/main.cc", []),
    "source_location": (LOCATION, "src/main.cc", ["-std=c++20"]),
}


@pytest.mark.parametrize("case", list(BUILTIN_FILE))
def test_builtin_file_and_source_location_keep_their_paths(tmp_path: Path, case: str) -> None:
    tree, main, flags = BUILTIN_FILE[case]
    compiler = "g++" if case == "source_location" else case
    a, b, _ = _pair(tmp_path, compiler, flags, tree=tree, main=main)
    assert a.obj != b.obj and a.key != b.key


@pytest.mark.parametrize(
    ("compiler", "flags"),
    [
        ("gcc", ["-fsanitize=address"]), ("gcc", ["-fsanitize=undefined"]),
        ("clang", ["-fsanitize=address"]), ("clang", ["-fsanitize=undefined"]),
        ("gcc", ["-flto", "-frandom-seed=1"]), ("clang", ["-flto"]), ("clang", ["-flto=thin"]),
        ("clang", ["-fopenmp", "-gline-tables-only"]), ("clang", ["-fembed-bitcode"]),
    ],
    ids=str,
)  # fmt: skip
def test_options_that_put_paths_in_objects_keep_them_in_the_key(
    tmp_path: Path, compiler: str, flags: list[str]
) -> None:
    tree = {"src/main.c": "int g[4];\nint f(int i, int j) { return g[i] + i / j; }\n"
            "void loop(int *a, int n) {\n#pragma omp parallel for\n"
            " for (int i = 0; i < n; i++) a[i] = i;\n}\n"}  # fmt: skip
    a, b, _ = _pair(tmp_path, compiler, flags, tree=tree, main="src/main.c")
    assert a.obj != b.obj and a.key != b.key


def test_verbose_assembly_quotes_the_path_and_keeps_it(tmp_path: Path) -> None:
    tree = {"src/main.c": "int f(int i, int j) { return i / j; }\n"}
    a, b, _ = _pair(tmp_path, "gcc", ["-fverbose-asm"], tree=tree, main="src/main.c", mode="-S")
    assert a.obj != b.obj and a.key != b.key


def test_a_prefix_map_that_renames_the_basename_keeps_the_paths(tmp_path: Path) -> None:
    """gcc maps the STT_FILE name with -fdebug-prefix-map even without -g: a map that
    reaches into the basename changes the object."""
    a, b, _ = _pair(tmp_path, "gcc", [], flags_for=lambda root: (
        [f"-fdebug-prefix-map={root}/src/ma=Q"] if "alice" in str(root) else []))  # fmt: skip
    assert a.obj != b.obj and a.key != b.key


def test_macro_prefix_maps_let_file_share_without_debug_info(tmp_path: Path) -> None:
    """__FILE__ is expanded by the client: with absolute paths the texts differ (no
    sharing), with -fmacro-prefix-map they say the same, and share."""
    tree = {"src/main.c": "const char *where(void) { return __FILE__; }\n"}
    a, b, _ = _pair(tmp_path, "gcc", [], tree=tree, main="src/main.c")
    assert a.key != b.key and a.obj != b.obj
    a, b, _ = _pair(tmp_path, "gcc", [], tree=tree, main="src/main.c",
                    flags_for=lambda root: [f"-fmacro-prefix-map={root}=."])  # fmt: skip
    assert a.key == b.key and a.obj == b.obj


def test_system_header_flags_stay_in_the_key(tmp_path: Path) -> None:
    """The markers' flags (3: a system header) decide whether a warning is given, and
    with -Werror whether the compile succeeds: two texts apart only in a flag are two
    jobs."""
    text = (b'# 0 "/a/src/main.c"\n# 1 "/a/include/util.h" 1\n'
            b"static int unused(void) { return 1; }\n"
            b'# 2 "/a/src/main.c" 2\nint main(void) { return 0; }\n')  # fmt: skip
    system = text.replace(b'util.h" 1\n', b'util.h" 1 3\n')
    job = JUDGE.judge(["gcc", "-Werror=unused-function", "-c", "main.c"])
    keys = {cache_key(job_digest(1, job.argv, t), identity("gcc")) for t in (text, system)}
    assert len(keys) == 2
    results = []
    for name, t in (("plain", text), ("system", system)):
        (tmp_path / f"{name}.i").write_bytes(t)
        compiled = subprocess.run(["gcc", "-Werror=unused-function", "-c", f"{name}.i"],
                                  cwd=tmp_path, capture_output=True, check=False)  # fmt: skip
        results.append(compiled.returncode)
    assert results[0] != 0 and results[1] == 0


WARNING_TREE = {
    "src/main.c": '#include <string.h>\n#include "util.h"\n'
    'void copy(char *d) { char b[4]; strcpy(b, "far too long"); memcpy(d, b, 4); }\n'
    "char g[4];\nvoid f(void) { fill(g, 8); }\nint main(void) { int y; return scaled(g[1]); }\n",
    "include/util.h": '#include "deep.h"\n'
    "static inline int scaled(int x) { int unused; return x * 2; }\n"
    "static inline void fill(char *d, int n) { __builtin_memset(d, 1, n); }\n",
    "include/deep.h": "static int never_used(void) { return 1; }\n",
}


@pytest.mark.parametrize("color", [False, True], ids=["plain", "color"])
@pytest.mark.parametrize("compiler", ["gcc", "clang"])
def test_a_hits_warnings_are_what_the_requester_would_have_read(
    tmp_path: Path, compiler: str, color: bool
) -> None:
    """Alice's warnings (include chains, a header's function, inlined-from, colour),
    rewritten with the two jobs' markers, are byte for byte what Carol's own compile
    prints."""
    flags = ["-O2", "-Wall", "-Wextra"] + (["-fdiagnostics-color=always"] if color else [])
    a, b, _ = _pair(tmp_path, compiler, flags, tree=WARNING_TREE, main="src/main.c")
    assert a.key == b.key and b"warning" in a.stderr and a.stderr != b.stderr
    if compiler == "gcc":
        assert b"inlined from" in a.stderr and b"In file included from" in a.stderr
    assert rewrite(a.stderr, a.paths, b.paths) == b.stderr


MAP_CASES = {
    # (Alice's maps, Carol's maps): {root} is each one's checkout
    "trailing slash": (["-ffile-prefix-map={root}/=/src/"], ["-ffile-prefix-map={root}/=/src/"]),
    "only the sources": (
        ["-fdebug-prefix-map={root}/src=/s"],
        ["-fdebug-prefix-map={root}/src=/s"],
    ),
    "overlapping, in order": (
        ["-fdebug-prefix-map={root}=/a", "-fdebug-prefix-map={root}/include=/inc"],
        ["-fdebug-prefix-map={root}=/a", "-fdebug-prefix-map={root}/include=/inc"],
    ),
    "overlapping, other order": (
        ["-fdebug-prefix-map={root}=/a", "-fdebug-prefix-map={root}/include=/inc"],
        ["-fdebug-prefix-map={root}/include=/inc", "-fdebug-prefix-map={root}=/a"],
    ),
    "to different places": (["-ffile-prefix-map={root}=/x"], ["-ffile-prefix-map={root}=/y"]),
    "one maps, one does not": (["-ffile-prefix-map={root}=."], []),
}


@pytest.mark.parametrize("case", list(MAP_CASES))
@pytest.mark.parametrize("compiler", ["gcc", "g++"])
def test_prefix_maps_that_do_not_send_both_checkouts_alike_keep_them_apart(
    tmp_path: Path, compiler: str, case: str
) -> None:
    """gcc's map rules (last match wins, plain prefixes, DIR// mapped as DIR) as the key
    models them: wherever the keys agree the objects do, and maps that leave a path of
    the checkout alone, or send the two apart, keep the keys apart."""
    alice_maps, carol_maps = MAP_CASES[case]

    def maps(root: Path) -> list[str]:
        chosen = alice_maps if "alice" in str(root) else carol_maps
        return [m.format(root=root) for m in chosen]

    a, b, _ = _pair(tmp_path, compiler, ["-g"], flags_for=maps)  # (one key: one object)
    assert (a.key == b.key) == (case == "overlapping, in order"), case


@pytest.mark.parametrize(("compiler", "main", "flags"),
                         [("g++", "src/main.cc", []), ("g++", "src/main.cc", ["-O2"]),
                          ("gcc", "src/main.c", [])])  # fmt: skip
def test_a_line_like_a_marker_inside_a_raw_string_keeps_the_paths(
    tmp_path: Path, compiler: str, main: str, flags: list[str]
) -> None:
    """A raw string literal spans lines (C++, and C with GNU extensions): a line in it
    that looks like a line marker is the string's text, which the object holds whole.
    Two sources apart only in the directory such a line names are two jobs (a review
    had Bob's object name Alice's URL)."""
    body = 'const char *s = R"zz(\n# 1 "{where}/payload.sh"\n)zz";\n'
    compiled = []
    for who, where in (("alice", "https://good.example"), ("bob", "https://bad.example")):
        root = place(tmp_path / who / "proj", {main: body.format(where=where)})
        compiled.append(compile_as_distcc(compiler, flags, root, main, tmp_path / "server",
                                          absolute=False))  # fmt: skip
    a, b = compiled
    assert a.status == 0 and b.status == 0, (a.stderr, b.stderr)
    assert b"https://good.example/payload.sh" in a.obj
    assert b"https://bad.example/payload.sh" in b.obj
    assert a.key != b.key


TYPE_NAME_TREE = {
    "src/main.cc": "#include <cstdio>\n"
    "template <class T> const char *type_name() { return __PRETTY_FUNCTION__; }\n"
    "auto cb = [] {};\nstruct { int x; } anon;\n"
    "int main() { std::puts(type_name<decltype(cb)>()); std::puts(type_name<decltype(anon)>()); }\n"
}


@pytest.mark.parametrize("compiler", ["clang++", "g++"])
def test_type_names_keep_clangs_paths_and_gccs_basenames(tmp_path: Path, compiler: str) -> None:
    """clang names a lambda and an unnamed type by where they are, ``(lambda at
    /home/alice/proj/src/main.cc:3:11)``, in __PRETTY_FUNCTION__: its objects from two
    checkouts differ, and so do their keys (a review had Bob's object from clang name
    Alice's path). gcc writes ``<lambda()>``: its keys still share."""
    a, b, _ = _pair(tmp_path, compiler, ["-O2"], tree=TYPE_NAME_TREE, main="src/main.cc")
    if compiler == "clang++":
        assert a.obj != b.obj and a.key != b.key
    else:
        assert a.obj == b.obj and a.key == b.key


@pytest.mark.parametrize("option", ["-gctf", "-gbtf"])
def test_ctf_and_btf_keep_the_paths_even_with_prefix_maps(tmp_path: Path, option: str) -> None:
    """gcc's CTF and BTF record the main file's path without applying the prefix maps
    (a review had two checkouts that each map their own root share a key)."""
    a, b, _ = _pair(
        tmp_path, "gcc", [option], flags_for=lambda root: [f"-ffile-prefix-map={root}=."]
    )
    assert a.key != b.key


@pytest.mark.parametrize("compiler", ["gcc", "clang"])
def test_an_asm_that_reads_the_jobs_own_text_keeps_the_paths(tmp_path: Path, compiler: str) -> None:
    """`.incbin` of the job's own file puts its text, markers and all, in the object
    (a third review): two checkouts are two jobs."""
    tree = {"src/main.c": 'int x;\n__asm__(".section .rodata\\n.incbin \\"input.i\\"\\n.text");\n'}
    a, b, _ = _pair(tmp_path, compiler, ["-O2"], tree=tree, main="src/main.c")
    assert a.key != b.key


def test_a_prefix_map_is_split_where_gcc_splits_it(tmp_path: Path) -> None:
    """gcc splits -ffile-prefix-map=OLD=NEW at the last '=': with /p=/zz/a=Y the file
    /p=/zz/a.c becomes Y.c, and /q/a.c stays a.c; the two jobs are two keys (an eighth
    review had them share one, so a victim got an object naming the attacker's file)."""
    argv = ["gcc", "-O2", "-ffile-prefix-map=/p=/zz/a=Y", "-c", "a.c"]
    job = JUDGE.judge(argv)
    texts = {"/p=/zz/a.c": b'# 1 "/p=/zz/a.c"\nint x;\n', "/q/a.c": b'# 1 "/q/a.c"\nint x;\n'}
    names = {}
    for path, text in texts.items():
        source = tmp_path / "input-0123456789abcdef.i"
        source.write_bytes(text)
        out = tmp_path / "out.o"
        subprocess.run(job.command("gcc", str(source), str(out)), cwd=tmp_path, check=True,
                       capture_output=True, timeout=60)  # fmt: skip
        symbols = subprocess.run(["readelf", "-s", str(out)], capture_output=True, text=True,
                                 check=True).stdout  # fmt: skip
        names[path] = next(line.split()[-1] for line in symbols.splitlines() if " FILE " in line)
    assert names == {"/p=/zz/a.c": "Y.c", "/q/a.c": "a.c"}
    keys = {cache_key(job_digest(1, job.argv, t), identity("gcc")) for t in texts.values()}
    assert len(keys) == 2
