"""The pure parts of checkout-independent keys: the line-marker scan and its obstacles,
the path rules, the stderr rewrite, entries that keep paths, and the cache's lookup,
store and path-miss count (with a memory store)."""

from __future__ import annotations

import asyncio
import threading
import time
import tracemalloc

import pytest

from cache import CachedResult, CompilerIdentity, MemoryStore, ResultCache, job_digest, result_cache
from cache.entry import decode_entry, encode_entry
from cache.keys import why_not_cacheable
from cache.markers import MAX_MARKERS, MAX_PATHS, scan
from cache.path_rules import compiler_family, gcc_remap, prefix_maps
from cache.stderr_paths import MAX_WORK_BYTES, Unmappable, rewrite

GCC = CompilerIdentity("gcc (Debian 12.2.0-14+deb12u1) 12.2.0", "ab" * 32)
CLANG = CompilerIdentity("Debian clang version 14.0.6", "cd" * 32)
ICC = CompilerIdentity("icc (ICC) 2021.1 20201112", "ef" * 32)
SECRET = b"s" * 32


def text(root: str, body: bytes = b"int x;\n", debug: bool = False) -> bytes:
    cwd = f'# 1 "{root}//"\n'.encode() if debug else b""
    return (f'# 0 "{root}/src/a.c"\n'.encode() + cwd + b'# 0 "<built-in>"\n'
            + f'# 1 "{root}/src/a.c"\n# 1 "{root}/include/h.h" 1\n'.encode()
            + b"static int h;\n" + f'# 2 "{root}/src/a.c" 2\n'.encode() + body)  # fmt: skip


def test_the_scan_finds_every_marker_its_path_and_the_working_directory() -> None:
    marked = scan(text("/home/alice/p", debug=True))
    assert marked.paths == (b"/home/alice/p/src/a.c", b"/home/alice/p//", b"<built-in>",
                            b"/home/alice/p/include/h.h")  # fmt: skip
    assert list(marked.occurrences) == [0, 1, 2, 0, 3, 0]
    assert marked.working_directory == 1 and marked.obstacle is None
    assert scan(text("/a")).working_directory is None


@pytest.mark.parametrize(
    "body",
    [b"const char *f = __FILE__;\n", b"x = __BASE_FILE__;\n", b"__FILE_NAME__\n",
     b"f(__builtin_FILE());\n", b"__builtin_source_location()\n", b"#define X 1\n",
     b"# define X\n", b"#/**/define X\n", b"%:define X\n", b"__builtin_FI\\\nLE()\n",
     b"a ??/\nb\n", b"x\r\n", b"  # 5 \"/x/y.c\"\n", b"# 7\n", b"#line 3 \"q.c\" junk\n",
     b"#include <stdio.h>\n", b"#if __has_include(<x.h>)\n",
     b's = R"zz(\n# 1 "/x/y.c"\n)zz";\n', b'f(u8R"(a)");\n', b'x=uR"(a)";\n', b'x=UR"(a)";\n',
     b'x=LR"(a)";\n', b'R""(a)"";\n', b"??=define X 1\n", b"a ??( 1 ??)\n",
     b'# 1 "/a/x\0/b.c"\nint y;\n'],
    ids=repr,
)  # fmt: skip
def test_what_could_turn_a_path_into_code_keeps_the_paths(body: bytes) -> None:
    marked = scan(text("/a") + body)
    assert marked.obstacle is not None
    digest = job_digest(1, ["gcc", "-c", "a.c"], text("/a") + body)
    assert digest.portable is None and digest.rule == marked.obstacle


def test_common_texts_have_no_obstacle() -> None:
    body = (b'int printf(const char *, ...);\nint main(void) { printf("%d # %s", 1, '
            b'"x"); return 0 ? 1 : 2; }\ntypedef struct _IO_FILE __FILE;\nFILE *f;\n'
            b"#pragma GCC diagnostic push\n#line 9 \"/a/src/a.c\"\n"
            b'puts("ERROR"); x = FOOR"a"; y = "R"; z = uR"a b(c)"; f("R", "(");\n')  # fmt: skip
    assert scan(text("/a") + body).obstacle is None
    assert scan(b"int x;\n").obstacle == "the text does not start with a line marker"
    assert scan(b'# 1 "a\\\\b.c"\n').obstacle == "a line marker's path holds an escape"


def test_compiler_families_from_the_version_line() -> None:
    assert compiler_family(GCC.version) == "gcc"
    assert compiler_family("x86_64-linux-gnu-gcc-12 (Debian 12.2.0-14) 12.2.0") == "gcc"
    assert compiler_family("c++ (GCC) 13.2.1 20231011 (Red Hat 13.2.1-4)") == "gcc"
    assert compiler_family(CLANG.version) == "clang"
    assert compiler_family("Apple clang version 15.0.0 (clang-1500.0.40.1)") == "clang"
    assert compiler_family(ICC.version) is None
    assert compiler_family("unknown") is None


def test_gcc_remaps_with_the_last_matching_map() -> None:
    """As measured with gcc 12 (-fdebug-prefix-map and -ffile-prefix-map in one list)."""
    maps = prefix_maps(["gcc", "-fdebug-prefix-map=/a=X", "-ffile-prefix-map=/a/b=Y"])
    assert gcc_remap(maps, b"/a/b/c.c") == b"Y/c.c"
    assert gcc_remap(maps[::-1], b"/a/b/c.c") == b"X/b/c.c"
    assert gcc_remap(maps, b"/q/c.c") == b"/q/c.c"


def _keys(argv_a: list[str], a: bytes, argv_b: list[str], b: bytes, share: bool = False,
          identity: CompilerIdentity = GCC) -> tuple[bytes, bytes]:  # fmt: skip
    one, two = job_digest(1, argv_a, a, share), job_digest(1, argv_b, b, share)
    return one.digest_for(identity), two.digest_for(identity)


def test_the_rules_in_short() -> None:
    alice, carol = "/home/alice/p", "/home/carol/w/q"
    plain = ["gcc", "-O2", "-c", "a.c"]
    one, two = _keys(plain, text(alice), plain, text(carol))
    assert one == two  # no debug info: directories left out
    for identity in (CLANG, ICC):  # clang as gcc; a compiler nobody measured: paths kept
        one, two = _keys(plain, text(alice), plain, text(carol), identity=identity)
        assert (one == two) == (identity is CLANG)
    one, two = _keys(plain, text(alice), plain, text(alice).replace(b"/src/a.c", b"/src/b.c"))
    assert one != two  # the basename is in the object
    debug = ["gcc", "-g", "-c", "a.c"]
    one, two = _keys(debug, text(alice, debug=True), debug, text(carol, debug=True))
    assert one != two
    one, two = _keys(debug, text(alice, debug=True), debug, text(carol, debug=True), share=True)
    assert one == two
    mapped_a = ["gcc", "-g", f"-ffile-prefix-map={alice}=.", "-c", "a.c"]
    mapped_c = ["gcc", "-g", f"-ffile-prefix-map={carol}=.", "-c", "a.c"]
    one, two = _keys(mapped_a, text(alice, debug=True), mapped_c, text(carol, debug=True))
    assert one == two
    one, two = _keys(mapped_a, text(alice, debug=True), mapped_c, text(carol, debug=True),
                     identity=CLANG)  # fmt: skip
    assert one != two  # (clang records its own directory, not the text's)
    half = ["gcc", "-g", f"-ffile-prefix-map={alice}/src=.", "-c", "a.c"]
    one, two = _keys(half, text(alice, debug=True), mapped_c, text(carol, debug=True))
    assert one != two


def test_stderr_names_the_requesters_files_gcc_and_clang_forms() -> None:
    alice = (b"/home/alice/p/src/a.c", b"/home/alice/p/include/h.h", b"<built-in>")
    carol = (b"/c/src/a.c", b"/c/include/h.h", b"<built-in>")
    stored = (
        b"In file included from /home/alice/p/src/a.c:2:\n"
        b"/home/alice/p/include/h.h: In function \xe2\x80\x98h\xe2\x80\x99:\n"
        b"/home/alice/p/include/h.h:1:34: warning: unused variable [-Wunused-variable]\n"
        b"In file included from /home/alice/p/include/h.h:3,\n"
        b"                 from /home/alice/p/src/a.c:2:\n"
        b"In function 'f',\n    inlined from 'g' at /home/alice/p/src/a.c:4:30:\n"
        b"\x1b[01m\x1b[K/home/alice/p/src/a.c:3:5:\x1b[m\x1b[K warning: x\n"
        b"<built-in>: note: y\n1 warning generated.\n"
    )
    wanted = stored.replace(b"/home/alice/p", b"/c")
    assert rewrite(stored, alice, carol) == wanted
    assert rewrite(stored, alice, alice) == stored
    assert rewrite(b"", alice, carol) == b""


@pytest.mark.parametrize(
    "stderr",
    [b"warning: quoting /home/alice/p/src/a.c here\n",  # not a location
     b'{"file": "/home/alice/p/src/a.c", "line": 3}\n',  # JSON diagnostics
     b"/home/alice/p/src/a.c(3,5): warning: x\n"],  # (msvc form)
    ids=["quoted", "json", "msvc"],
)  # fmt: skip
def test_a_stored_path_outside_a_location_makes_the_hit_unmappable(stderr: bytes) -> None:
    with pytest.raises(Unmappable):
        rewrite(stderr, (b"/home/alice/p/src/a.c",), (b"/c/src/a.c",))
    with pytest.raises(Unmappable):
        rewrite(b"x\n", (b"/a.c", b"/b.c"), (b"/c.c",))


def test_the_rewrite_is_linear_and_bounded() -> None:
    """A 16 MB stderr of colon-heavy lines: each line looked at from a few places, so the
    rewrite takes about as long as reading it (a quadratic one would take hours)."""
    line = b"/home/alice/p/src/a.c:3:5: warning: " + b"std::a::b::c " * 300 + b"\n"
    stderr = line * (16 * 1024 * 1024 // len(line))
    started = time.monotonic()
    out = rewrite(stderr, (b"/home/alice/p/src/a.c",), (b"/c/src/a.c",))
    assert time.monotonic() - started < 30
    assert out.count(b"/c/src/a.c:3:5") == stderr.count(b"\n")
    many = tuple(b"/home/alice%d/f.c" % i for i in range(80))  # (80 directories changed)
    moved = tuple(b"/home/carol%d/f.c" % i for i in range(80))
    with pytest.raises(Unmappable, match="too much"):
        rewrite(b"x" * (MAX_WORK_BYTES // 40), many, moved)


def test_entries_keep_the_storing_jobs_paths() -> None:
    result = CachedResult(b"obj", b"err", b"out", (b"/a/x.c", b"", b"/b\0weird"))
    assert decode_entry("k", encode_entry("k", result, SECRET), SECRET) == result
    plain = CachedResult(b"obj")
    assert decode_entry("k", encode_entry("k", plain, SECRET), SECRET) == plain


def _cache() -> ResultCache:
    return ResultCache([MemoryStore(1 << 20)], SECRET)


def test_a_hit_from_another_checkout_replays_warnings_naming_the_requesters_files() -> None:
    async def scenario() -> None:
        cache = _cache()
        argv = ["gcc", "-Wall", "-c", "a.c"]
        alice = job_digest(1, argv, text("/home/alice/p"))
        carol = job_digest(1, argv, text("/c"))
        warning = b"/home/alice/p/include/h.h:1:12: warning: 'h' defined but not used\n"
        cache.store(alice, GCC, CachedResult(b"OBJ", warning))
        await asyncio.gather(*cache._background)
        got = await cache.lookup(carol, GCC)
        assert got is not None and got.obj == b"OBJ"
        assert got.stderr == b"/c/include/h.h:1:12: warning: 'h' defined but not used\n"
        assert got.paths == ()
        assert (cache.stats.hits, cache.stats.misses) == (1, 0)

    asyncio.run(scenario())


@pytest.mark.parametrize("copies", [1, 2000], ids=["small", "big"])
def test_a_big_hits_warnings_are_renamed_off_the_event_loop(
    copies: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Renaming 16 MiB of warnings takes most of a second: a review held a server's
    loop 0.7 s a hit. Big ones are renamed in a thread, small ones on the loop."""
    threads: list[threading.Thread] = []

    def recording(stderr: bytes, stored: tuple[bytes, ...], mine: tuple[bytes, ...]) -> bytes:
        threads.append(threading.current_thread())
        return rewrite(stderr, stored, mine)

    monkeypatch.setattr(result_cache, "rewrite", recording)

    async def scenario() -> None:
        cache = _cache()
        argv = ["gcc", "-Wall", "-c", "a.c"]
        alice = job_digest(1, argv, text("/home/alice/p"))
        carol = job_digest(1, argv, text("/c"))
        warning = b"/home/alice/p/include/h.h:1:12: warning: 'h' defined but not used\n"
        cache.store(alice, GCC, CachedResult(b"OBJ", warning * copies))
        await asyncio.gather(*cache._background)
        got = await cache.lookup(carol, GCC)
        assert got is not None and got.stderr.count(b"/c/include/h.h:1:12") == copies

    asyncio.run(scenario())
    assert (threads == [threading.main_thread()]) == (copies == 1)


def test_unmappable_warnings_are_a_miss_and_counted() -> None:
    async def scenario() -> None:
        cache = _cache()
        argv = ["gcc", "-Wall", "-c", "a.c"]
        alice, carol = job_digest(1, argv, text("/home/alice/p")), job_digest(1, argv, text("/c"))
        cache.store(alice, GCC, CachedResult(b"OBJ", b"note: see /home/alice/p/src/a.c\n"))
        await asyncio.gather(*cache._background)
        assert await cache.lookup(carol, GCC) is None
        assert (cache.stats.unmappable, cache.stats.misses, cache.stats.hits) == (1, 1, 0)
        assert await cache.lookup(alice, GCC) is not None  # (Alice's own job: as stored)

    asyncio.run(scenario())


def test_a_miss_that_differs_only_by_paths_is_counted() -> None:
    async def scenario() -> None:
        cache = _cache()
        debug = ["gcc", "-g", "-c", "a.c"]
        alice = job_digest(1, debug, text("/home/alice/p", debug=True))
        carol = job_digest(1, debug, text("/c", debug=True))
        other = job_digest(1, debug, text("/c", b"int y;\n", debug=True))
        cache.store(alice, GCC, CachedResult(b"OBJ"))
        await asyncio.gather(*cache._background)
        assert await cache.lookup(carol, GCC) is None
        assert await cache.count_path_miss(carol, [GCC]) is True
        assert await cache.lookup(other, GCC) is None
        assert await cache.count_path_miss(other, [GCC]) is False  # (another text)
        assert await cache.count_path_miss(alice, [GCC]) is False  # (the same job: evicted)
        assert await cache.count_path_miss(carol, [CLANG]) is False  # (another compiler)
        assert cache.stats.path_misses == 1
        cache.note_miss(carol, [GCC])  # (as the daemons count: in the background)
        await asyncio.gather(*cache._checks)
        assert cache.stats.path_misses == 2

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "body", [b"f(__PRETTY_FUNCTION__);\n", b"g(__FUNCSIG__);\n", b"__builtin_dump_struct(&s, p);\n"]
)
def test_type_names_keep_the_paths_for_clang_only(body: bytes) -> None:
    """clang writes a lambda's or an unnamed type's path into the object through these;
    gcc does not."""
    marked = scan(text("/a") + body)
    assert marked.obstacle is None and marked.names_types
    digest = job_digest(1, ["clang++", "-c", "a.cc"], text("/a") + body)
    assert digest.rule == "no-debug" and digest.families == frozenset({"gcc"})
    assert not scan(text("/a") + b"int x;\n").names_types
    shared = job_digest(1, ["clang++", "-g", "-c", "a.cc"], text("/a", body, debug=True), True)
    assert shared.rule == "any-dir" and shared.families == frozenset({"gcc"})


@pytest.mark.parametrize("macro", [b"__DATE__", b"__TIME__", b"__TIMESTAMP__"])
def test_a_text_that_names_the_time_is_never_cached(macro: bytes) -> None:
    """clang expands the time macros in a preprocessed text: its object holds the time
    of its compile (a fifth review: a hit handed out an older one)."""
    digest = job_digest(
        1, ["clang", "-c", "a.c"], text("/a") + b"const char *t = " + macro + b";\n"
    )
    assert digest.uncacheable is not None and macro.decode() in digest.uncacheable
    assert job_digest(1, ["clang", "-c", "a.c"], text("/a")).uncacheable is None


@pytest.mark.parametrize(
    "body",
    [b"const char *t = __TI\\\nME__;\n", b"#define P(a,b) a##b\nconst char *t = P(__TI,ME__);\n",
     b'asm(".INCBIN \\"/etc/hostname\\"");\n', b'int p =\n#include "/sys/x"\n;\n',
     b"%:define X 1\n", b"??=define X 1\n"],
    ids=repr,
)  # fmt: skip
def test_a_text_no_preprocessor_writes_is_never_cached(body: bytes) -> None:
    """clang runs directives and splices in a preprocessed text (it built __TIME__ from
    two halves, and read a server file by #include), and an assembler reads what .incbin
    names, in any case: an eighth review. A client's preprocessor writes none of them."""
    digest = job_digest(1, ["clang", "-c", "a.c"], text("/a") + body)
    assert digest.uncacheable is not None and "no client's preprocessor" in digest.uncacheable


def test_prefix_maps_split_at_the_last_equals_sign_and_are_bounded() -> None:
    """gcc splits OLD=NEW at the last '=' (-ffile-prefix-map=/p=/zz/a=Y makes /p=/zz/a.c
    Y.c: checked with gcc 12); a key that split at the first modelled another map (an
    eighth review). Past 32 maps a key keeps the paths (each path was checked against
    each map: 4,000 of them took seconds)."""
    (found,) = prefix_maps(["gcc", "-ffile-prefix-map=/p=/zz/a=Y"])
    assert (found.old, found.new) == (b"/p=/zz/a", b"Y")
    (plain,) = prefix_maps(["gcc", "-ffile-prefix-map=/p"])
    assert (plain.old, plain.new) == (b"/p", b"")
    many = ["gcc", "-c", "a.c", *(f"-ffile-prefix-map=/x{i}=/y" for i in range(33))]
    assert job_digest(1, many, text("/a")).rule == "more than 32 prefix maps"


@pytest.mark.parametrize(
    "body",
    [
        b'asm(".section .rodata\\n.inc" "bin \\"/usr/lib/os-release\\"\\n.text");\n',
        b'asm(".section .rodata\\n.inc"\n# 7 "/home/a/a.c"\n"bin \\"/x\\"\\n.text");\n',
        b'asm(".inc" /* */ "bin \\"/x\\"");\n',
        b'asm(".section .rodata\\n\\056incbin \\"/etc/ld.so.cache\\"\\n.text");\n',
        b'asm("\\x0000002eincbin \\"/x\\"");\n',
        b'asm("\\151ncbin");\n',
        b'asm(".macro m\\n.incb\\\\()in \\"/x\\"\\n.endm\\nm");\n',
        b'asm(".IRP x,bin\\n.inc\\\\x \\"/x\\"\\n.endr");\n',
        b'void f(void) { __asm__ __volatile__(".%c0 \\"/x\\"" :: "i"(incbin)); }\n',
        b'void f(void) { asm volatile goto ("%c0%c1 \\"/x\\"" :: "i"(a), "i"(b) :: out); }\n',
        b'extern char v[] __asm__("x\\n.incbin \\"/x\\"\\n");\n',
        b'__attribute__((section(".data\\n.Include \\"/x\\"\\n#"))) int y = 1;\n',
        b'__attribute__((symver("f@V\\n.incbin \\"/x\\""))) int f(void);\n',
        b'#pragma clang section data=".data\\n.incbin"\n',
        # An eleventh review's: a comment, a "#" line, a pragma or a Unicode blank
        # between two literals; a separator by its number before .irp; gas's .irep; an
        # escape out of range (gcc keeps its low byte: "."); clang's \\x{2e}; a raw
        # string; a form feed between asm and its "("; #ident; a PCH pragma; _Pragma.
        b'asm(".inc" // split\n "bin \\"/x\\"");\n',
        b'asm(".inc"\n#\n"bin \\"/x\\"");\n',
        b'asm(".inc"\n#pragma GCC diagnostic push\n"bin \\"/x\\"");\n',
        b'asm(".inc"\xc2\xa0"bin \\"/x\\"");\n',
        b'asm("\\012.irp x,bin\\n.inc\\\\x \\"/x\\"\\n.endr");\n',
        b'asm(".irep x,bin\\n.inc\\\\x \\"/x\\"\\n.endr");\n',
        b'asm("\\456incbin \\"/x\\"");\n',
        b'asm("\\x{2e}incbin \\"/x\\"");\n',
        b'asm(R"(.inc)" R"(bin "/x")");\n',
        b'void f(void) { __asm__\f(".%c0 \\"/x\\"" :: "i"(incbin)); }\n',
        b'#ident "x"\n',
        b'#pragma GCC pch_preprocess "/x.gch"\n',
        b'_Pragma("GCC diagnostic push") int y;\n',
        # A twelfth review's: a section or weakref name with a prefix or a comment before
        # its "(", fentry_name under -pg, MS _asm (each with a dot by its number); a
        # label ".inc" printed by an operand glued to letters; a \r line end before
        # #ident; clang's #__include_macros; a separator by its number before .irp.
        b'int v __attribute__((section(u8"x\\n\\056incbin \\"/x\\"\\n#"))) = 1;\n',
        b'int v __attribute__((section/**/(".data\\n.incbin \\"/x\\"\\n#"))) = 1;\n',
        b'__attribute__((fentry_name("x\\n\\t\\056incbin \\"/x\\"\\n#"))) void f(void) {}\n',
        b'_asm("\\t\\056incbin \\"/x\\"\\n");\n',
        b'extern char a[] asm(".inc");\nvoid f(void) { asm("%c0bin \\"/x\\"" :: "i"(a)); }\n',
        b'int a;\r#ident "x"\nint b;\n',
        b'#__include_macros "/usr/include/features.h"\n',
        b'asm("\\x0a.irp y,bin\\n.inc\\\\y \\"/x\\"\\n.endr\\n");\n',
        b'asm(R"(\n.inc)" R"(bin "/x")");\n',
        # A thirteenth review's: dialect braces gcc and clang drop ({}, {a|b}); gcc's
        # %~ (an "i" under -mavx2); a comment gas deletes; clang's .rep; __FILE__ and
        # __FILE_NAME__, which clang expands with a marker's path; an operand before a
        # dot (it prints a label ending in a newline); MS __pragma.
        b'void f(void) { __asm__ volatile(".inc{}bin \\"/x\\"" ::); }\n',
        b'__asm__(".inc{bin|x} \\"/x\\"");\n',
        b'void f(void) { __asm__ volatile(".incb%~n \\"/x\\"" ::); }\n',
        b'__asm__(".inc/**/bin \\"/x\\"");\n',
        b'__asm__(".rep 1\\n.incb\\\\()in \\"/x\\"\\n.endr");\n',
        b'# 1 "bin"\n__asm__(".inc" __FILE__ " \\"/x\\"");\n',
        b'# 1 "/home/x/bin"\n__asm__(".inc" __FILE_NAME__ " \\"/x\\"");\n',
        b'extern char z[] __asm__("z\\n");\n'
        b'void f(void) { __asm__("push %0.inc" "bin" :: "i"(z)); }\n',
        b'void f(void) { __asm__("push %[x].irp v,bin" :: [x] "i"(z)); }\n',
        b'void bin(void) { __asm__("." __FUNCTION__); }\n',
        b'__pragma(GCC dependency "/x")\n',
    ],
    ids=repr,
)
def test_a_text_whose_assembler_could_read_a_file_is_never_cached(body: bytes) -> None:
    """An assembler's .incbin or .include puts a server file into the object (none of
    which a key covers): a tenth review got /usr/lib/os-release cached through joined
    literals, a dot by its number and a macro's splice; an eleventh through eleven more
    spellings past the scan that mended those. So a cached text is held to shapes
    (cache/markers.py assembler_reads): every case here is outside them (the real
    compilers' reading of several: tests/integration/test_cache_assembler_reads.py)."""
    digest = job_digest(1, ["gcc", "-c", "a.c"], text("/a") + body)
    assert digest.uncacheable is not None


@pytest.mark.parametrize(
    "body",
    [
        b'extern int fscanf (void *__s, const char *__f, ...) __asm__ ("" "__isoc99_fscanf");\n',
        b'void f(int *p) { __asm__ __volatile__ ("lock; xaddl %0, %1\\n\\t%X2" : "+r"(*p)'
        b' : "m"(*p), "m"(*p)); }\n',
        b'void g(void) { __asm__ ("movl %%fs:%P1, %0" : "=r"(x) : "i"(8)); }\n',
        b'__attribute__((section(".text.hot"))) void h(void) {}\n',
        b'const char *s = "include, incbin and macro in a message"; int includes;\n',
        b"struct o { int rept, macro; } v; int *p = &v.rept; int q = v.macro;\n",
        b'const char *d = "\\0\\033[1m\\x1b\\n"; char fmt[] = "%02d%02d";\n',
        b'# 1 "/usr/include/x86_64-linux-gnu/asm/socket.h" 1 3 4\nint wasm, asm_ptr;\n',
        b'const char *why = "inline asm (as written) is not portable";\n',
        b"int f(pair p) { return {p.first, p.second}; }\ntemplate <class... A> void g(A... a)"
        b" { h({a...}); }\ndouble d = {1.};\n",
        b'__asm__ volatile ("ldtilecfg\\t%X0" :: "m" (*((const void **)p)));\n',
        b'#pragma GCC diagnostic ignored "-Wunused"\n#pragma GCC target("avx2")\n'
        b"#pragma GCC visibility push(default)\n#pragma pack(push, 1)\n",
    ],
    ids=repr,
)
def test_ordinary_asm_and_strings_stay_cacheable(body: bytes) -> None:
    """What real headers and programs hold: glibc's asm names, inline asm with operands
    apart from names, sections, strings that mention directives, members named so."""
    assert job_digest(1, ["gcc", "-c", "a.c"], text("/a") + body).uncacheable is None


@pytest.mark.parametrize(
    "body",
    [b'#if __has_include("/usr/include/stdio.h")\nint have = 1;\n#else\nint have = 2;\n#endif\n',
     b"  #  ifdef X\nint y;\n#endif\n", b"#undef X\n", b"int x = __has_include_next(<a.h>);\n"],
    ids=repr,
)  # fmt: skip
def test_a_conditional_directive_is_never_cached(body: bytes) -> None:
    """clang evaluates #if in a preprocessed text, and __has_include asks the server's
    file system: the same key gave two objects on servers with and without a header (a
    tenth review). No client's preprocessor leaves a conditional in its output."""
    digest = job_digest(1, ["clang", "-c", "a.c"], text("/a") + body)
    assert digest.uncacheable is not None and "no client's preprocessor" in digest.uncacheable


def test_a_conditional_in_a_string_is_no_directive() -> None:
    assert (
        job_digest(1, ["clang", "-c", "a.c"], text("/a") + b'char s[] = "#if";\n').uncacheable
        is None
    )


def test_gcc_lto_without_a_seed_is_never_cached() -> None:
    """gcc names its LTO sections by a random seed: two compiles of one text differ
    (clang's do not; tests/integration/test_cache_assembler_reads.py)."""
    assert why_not_cacheable(["gcc", "-c", "-flto", "a.c"]) is not None
    assert why_not_cacheable(["cc", "-c", "-flto=auto", "a.c"]) is not None
    assert why_not_cacheable(["gcc", "-c", "-flto", "-frandom-seed=a.c", "a.c"]) is None
    assert why_not_cacheable(["gcc", "-c", "-flto", "-fno-lto", "a.c"]) is None
    assert why_not_cacheable(["clang", "-c", "-flto", "a.c"]) is None


@pytest.mark.parametrize("option", ["-fexec-charset=IBM1047", "-fwide-exec-charset=UTF-16",
                                    "-fpascal-strings"])  # fmt: skip
def test_options_that_turn_a_literal_into_other_bytes_are_never_cached(option: str) -> None:
    """A literal converted by the server's conversion modules (glibc's gconv, no part of a
    compiler's identity), or given a length byte by \\p, can be any bytes the text does
    not show: a dot, a line end (a twelfth review)."""
    assert why_not_cacheable(["gcc", "-c", option, "a.c"]) is not None


def test_a_text_of_markers_alone_is_hashed_whole_within_a_bounded_memory() -> None:
    """A review's text of nothing but line markers naming distinct files made the key's
    bookkeeping take 26 times its size (1.3 GB for 48 MB), before any slot and outside
    every budget. Past MAX_MARKERS markers or MAX_PATHS files the scan keeps nothing;
    such a text is never cached."""
    many = b'# 1 "a.c"\n' + b"".join(b'#1 "%07d"\n' % i for i in range(MAX_MARKERS + 10))
    files = b'# 1 "a.c"\n' + b"".join(b'#1 "%07d"\n' % i for i in range(MAX_PATHS + 10))
    for text in (many, files):
        tracemalloc.start()
        try:
            digest = job_digest(1, ["gcc", "-c", "a.c", "-o", "a.o"], text)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert digest.uncacheable is not None and "line markers" in digest.uncacheable
        assert peak < len(text) + 64 * 1024 * 1024, peak
    # (below the bounds, a text's markers are followed: the same text, fewer of them)
    few = b'# 1 "a.c"\n' + b"".join(b'#1 "%07d"\n' % i for i in range(1000))
    assert job_digest(1, ["gcc", "-c", "a.c", "-o", "a.o"], few).uncacheable is None


@pytest.mark.parametrize("option", ["-ftime-report", "-ftime-report-details", "-fmem-report",
                                    "-fmem-report-wpa", "-fstats"])  # fmt: skip
def test_a_compile_that_reports_on_itself_is_never_cached(option: str) -> None:
    """A hit replays the stored stderr: the first compile's timings (a fourteenth review)."""
    assert why_not_cacheable(["gcc", option, "-c", "a.c", "-o", "a.o"]) is not None


@pytest.mark.parametrize("path", [b"/dev/urandom", b"/proc/self/stat", b"/sys/kernel/x"])
def test_a_text_whose_marker_names_a_device_is_never_cached(path: bytes) -> None:
    """A warning quotes a line of the marker's file: of /dev/urandom, other bytes each
    compile, which a hit would replay to everyone (a fourteenth review)."""
    text = b'# 1 "/home/a/a.c"\n# 1 "' + path + b'"\nint x = 1 << 40;\n'
    assert job_digest(1, ["gcc", "-c", "a.c", "-o", "a.o"], text).uncacheable is not None
    ordinary = text.replace(path, b"/home/a/b.h")
    assert job_digest(1, ["gcc", "-c", "a.c", "-o", "a.o"], ordinary).uncacheable is None


@pytest.mark.parametrize("path", [b"/home/al\xc3\xafce/p/a.c", b"/home/a\tb/p/a.c",
                                  b"/home/a\x7fb/a.c"])  # fmt: skip
def test_a_path_outside_printable_ascii_keeps_the_paths_in_the_key(path: bytes) -> None:
    """Compilers write such a byte in octal in a fix-it's path, which a hit's replay
    cannot rename (a fifteenth review): no key shares it across directories."""
    argv = ["gcc", "-c", "a.c", "-o", "a.o"]
    digest = job_digest(1, argv, b'# 1 "' + path + b'"\nint x;\n')
    assert digest.portable is None and "printable ASCII" in digest.rule, digest.rule
    plain = job_digest(1, argv, b'# 1 "/home/alice/p/a.c"\nint x;\n')
    assert plain.portable is not None


def test_only_a_lines_first_hash_can_start_a_directive_and_each_line_is_read_once() -> None:
    """A line of ``#if #if ...`` was read back to its start for every match (quadratic:
    1.8 MB took 22 s of CPU before any slot; a sixteenth review). Now the first ``#`` of
    a line decides, and the scan of the same shape at 4 MB is as cheap as any text's."""
    argv = ["clang", "-c", "a.c", "-o", "a.o"]
    one_line = b'# 1 "/home/a/a.c"\nint x; ' + b"#if " * 1_000_000 + b"\n"
    assert job_digest(1, argv, one_line).uncacheable is None  # (no # starts that line)
    leading = b'# 1 "/home/a/a.c"\n  #if 1 #if\nint x;\n#endif\n'
    assert job_digest(1, argv, leading).uncacheable is not None


@pytest.mark.parametrize("path", [b"../dev/urandom", b"//dev/urandom", b"/tmp/../dev/urandom",
                                  b"/usr/lib64/../../proc/self/stat"])  # fmt: skip
def test_a_device_named_by_any_spelling_is_never_cached(path: bytes) -> None:
    """(a sixteenth review: ``../dev/urandom`` from the job's directory passed a prefix
    test, and its random bytes were replayed)"""
    text = b'# 1 "/home/a/a.c"\n# 1 "' + path + b'"\nint x = 1 << 40;\n'
    assert job_digest(1, ["gcc", "-c", "a.c", "-o", "a.o"], text).uncacheable is not None


OBJECTIVE_C = [
    ["clang", "-c", "a.m", "-o", "a.o"],
    ["clang++", "-c", "a.mm", "-o", "a.o"],
    ["clang", "-x", "objective-c", "-c", "a.c", "-o", "a.o"],
    ["gcc", "-xobjective-c++-cpp-output", "-c", "a.c", "-o", "a.o"],
]


@pytest.mark.parametrize("argv", OBJECTIVE_C)
def test_objective_c_is_never_cached(argv: list[str]) -> None:
    """clang's GNU runtime records the file it compiled, the server's own name for the
    text, in the object (a sixteenth review)."""
    assert why_not_cacheable(argv) is not None
    assert why_not_cacheable(["clang", "-c", "a.c", "-o", "a.m.o"]) is None


def test_wrapped_warnings_are_never_cached() -> None:
    """gcc breaks a warning at a space in a path under -fmessage-length: the replay
    could not find Alice's path to rename (a seventeenth review)."""
    argv = ["gcc", "-fmessage-length=40", "-c", "a.c", "-o", "a.o"]
    assert why_not_cacheable(argv) is not None
    assert why_not_cacheable([*argv[:1], "-fmessage-length=0", *argv[2:]]) is None
    assert why_not_cacheable([*argv[:2], "-fmessage-length=0", *argv[2:]]) is None
