"""The real compilers against the never-cached rules for assembler reads and conditional
directives (cache/markers.py ``assembler_reads`` and ``_CONDITIONAL``): each spelling the
rules refuse really puts a server file into gcc's object (or clang's answer depends on
the server's files), and texts real preprocessors write from the system's headers stay
cacheable. Compiled as a server compiles: a text in a file of its own, ``-c``, in a
directory of its own."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cache import job_digest
from cache.keys import why_not_cacheable

pytestmark = pytest.mark.integration

SECRET = b"DISTLB-SERVER-FILE-4411"
MARKER = '# 1 "/home/alice/p/a.c"\n'


def _spellings(path: str) -> dict[str, str]:
    """Ways a text gets ``.incbin "path"`` to gcc's assembler (a tenth review's three
    first; then the other routes a string takes to the assembler as written, and an
    eleventh review's ways past the scan that mended the first)."""
    q = f'\\"{path}\\"'
    return {
        "joined literals": f'asm(".section .rodata\\n.inc" "bin {q}\\n.text");\n',
        "a dot by its number": f'asm(".section .rodata\\n\\056incbin {q}\\n.text");\n',
        "a long hex escape": f'asm(".section .rodata\\n\\x0000002eincbin {q}\\n.text");\n',
        "a macro's splice": f'asm(".macro m\\n.section .rodata\\n.incb\\\\()in {q}\\n'
        f'.text\\n.endm\\nm");\n',
        "a line marker between": f'asm(".section .rodata\\n.inc"\n# 7 "/home/alice/p/a.c"\n'
        f'"bin {q}\\n.text");\n',
        "an operand glued": "extern char incbin[];\nvoid f(void) { __asm__ __volatile__("
        f'".section .rodata\\n.%c0 {q}\\n.text" :: "i"(incbin)); }}\n',
        "an asm label": f'extern char v[] __asm__("x\\n.section .rodata\\n.incbin {q}\\n'
        f'.text\\n");\nchar *p = v;\n',
        "a section's name": f'__attribute__((section(".data\\n.incbin {q}\\n#"))) int y = 1;\n',
        # an eleventh review's, past the scan that mended the first
        "a comment between": f'asm(".section .rodata\\n.inc" // split\n "bin {q}\\n.text");\n',
        "a # line between": f'asm(".section .rodata\\n.inc"\n#\n"bin {q}\\n.text");\n',
        "an escape out of range": f'asm(".section .rodata\\n\\456incbin {q}\\n.text");\n',
        "gas's .irep": f'asm(".section .rodata\\n.irep x,bin\\n.inc\\\\x {q}\\n.endr\\n.text");\n',
        # a twelfth review's, past the shapes that mended the eleventh's
        "a section name with a prefix": 'int v __attribute__((section(u8"x\\n\\056incbin '
        + q
        + '\\n#"))) = 1;\n',
        "a label glued to letters": 'extern char a[] asm(".section .rodata\\n.inc");\n'
        'void f(void) { asm("%c0bin ' + q + '\\n.text" :: "i"(a)); }\n',
        # a thirteenth review's, past the spelling rule that mended the twelfth's
        "dialect braces": 'void f(void) { __asm__ volatile(".section .rodata\\n.inc{}bin '
        + q
        + '\\n.text" ::); }\n',
        "a comment gas deletes": '__asm__(".section .rodata\\n.inc/**/bin ' + q + '\\n.text");\n',
        "an operand before a dot": 'extern char z[] __asm__("z\\n");\nvoid f(void) { __asm__ '
        'volatile("push %0.inc" "bin ' + q + '" :: "i"(z)); }\n',
    }


def _compile(compiler: str, text: str | bytes, where: Path, *options: str) -> bytes | None:
    where.mkdir(parents=True, exist_ok=True)
    source = where / ("input.ii" if compiler.endswith("++") else "input.i")
    source.write_bytes(text.encode() if isinstance(text, str) else text)
    done = subprocess.run([compiler, *options, "-c", str(source), "-o", str(where / "out.o")],
                          capture_output=True, timeout=120, check=False)  # fmt: skip
    return (where / "out.o").read_bytes() if done.returncode == 0 else None


@pytest.mark.parametrize("spelling", list(_spellings("/x")))
def test_each_spelling_reads_a_file_into_gccs_object_and_is_never_cached(
    spelling: str, tmp_path: Path
) -> None:
    secret = tmp_path / "os-release"
    secret.write_bytes(SECRET + b"\n")
    text = MARKER + _spellings(str(secret))[spelling]
    obj = _compile("gcc", text, tmp_path / "job")
    assert obj is not None and SECRET in obj  # (what the rule stops: gcc reads the file)
    digest = job_digest(1, ["gcc", "-c", "a.c"], text.encode())
    assert digest.uncacheable is not None


def test_clangs_has_include_asks_the_servers_files_and_is_never_cached(tmp_path: Path) -> None:
    def text(path: Path) -> bytes:
        return (f'{MARKER}#if __has_include("{path}")\nint have = 1;\n#else\nint have = 2;\n'
                "#endif\n").encode()  # fmt: skip

    present = tmp_path / "present.h"
    present.write_text("\n")
    here = _compile("clang", text(present), tmp_path / "a")
    gone = _compile("clang", text(tmp_path / "absent.h"), tmp_path / "b")
    assert here is not None and gone is not None and here != gone
    assert job_digest(1, ["clang", "-c", "a.c"], text(present)).uncacheable is not None


@pytest.mark.parametrize(("compiler", "suffix"), [("gcc", "c"), ("g++", "cc"),
                                                  ("clang", "c"), ("clang++", "cc")])  # fmt: skip
def test_what_real_preprocessors_write_from_the_system_headers_stays_cacheable(
    compiler: str, suffix: str, tmp_path: Path
) -> None:
    """No false alarm on glibc's asm names, inline asm and intrinsics, nor the C++
    library (``std::includes``)."""
    headers = (["stdio.h", "stdlib.h", "string.h", "math.h", "pthread.h", "fenv.h",
                "signal.h", "sys/socket.h", "immintrin.h"] if suffix == "c" else
               ["iostream", "vector", "string", "map", "algorithm", "regex", "thread",
                "atomic", "filesystem", "immintrin.h"])  # fmt: skip
    source = tmp_path / f"a.{suffix}"
    source.write_text("".join(f"#include <{h}>\n" for h in headers) + "int main() {}\n")
    text = subprocess.run([compiler, "-E", "-O2", str(source)], capture_output=True,
                          timeout=120, check=True).stdout  # fmt: skip
    assert len(text) > 500_000
    assert job_digest(1, [compiler, "-c", f"a.{suffix}"], text).uncacheable is None


def test_gccs_lto_objects_differ_between_compiles_and_are_never_cached(tmp_path: Path) -> None:
    text = MARKER + "int f(int x) { return x * 3; }\n"
    first = _compile("gcc", text, tmp_path / "1", "-flto")
    second = _compile("gcc", text, tmp_path / "2", "-flto")
    assert first is not None and first != second
    assert why_not_cacheable(["gcc", "-flto", "-c", "a.c"]) is not None
    seeded = [_compile("gcc", text, tmp_path / n, "-flto", "-frandom-seed=a") for n in "34"]
    assert seeded[0] is not None and seeded[0] == seeded[1]
    clang = [_compile("clang", text, tmp_path / n, "-flto") for n in "56"]
    assert clang[0] is not None and clang[0] == clang[1]
    assert why_not_cacheable(["clang", "-flto", "-c", "a.c"]) is None
