"""The sealed sandbox (server/sandbox/sealed.py): a real compiler's jobs run where only
its toolchain is, so no spelling of an assembler read can put a server file the key
leaves out into a cached object, and what it compiles there is what it compiles
anywhere else. Real gcc, g++ and clang through a real server; the stand-ins that show
the other sandbox can read those files are wrapper scripts, whose jobs run there."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import redis

from client.distcc import ClientError
from server.compilers import toolchain
from tests.integration.test_cache_assembler_reads import _spellings
from tests.support.cache_builds import build, cache_balancer, cache_of
from tests.support.compilers import write_gcc_of_another_identity
from tests.support.projects import assert_identical_to_local, write_c_project
from tests.support.redis import RedisServer
from tests.support.sandbox_jobs import compile_on, incbin
from tests.support.servers import ServerProcess, StartBalancer, StartServer, wait_until
from wire import Reply

pytestmark = pytest.mark.integration

SERVER_FILES = (
    "/usr/lib/os-release",
    "/etc/ld.so.cache",
    "/usr/include/stdio.h",
    "/usr/lib/gcc/x86_64-linux-gnu/12/include/stddef.h",
)
"""Files of the server that the other sandbox shows (its /usr, /etc's loader files) and
that no compiler identity covers."""


def _wrappers(directory: Path) -> Path:
    """``shared-gcc``, ``shared-g++``, ``shared-clang``: scripts that run the real
    compiler. Not an ELF driver, no sealed sandbox: their jobs run in the shared one."""
    directory.mkdir(mode=0o755, parents=True, exist_ok=True)
    for name in ("gcc", "g++", "clang"):
        script = directory / f"shared-{name}"
        script.write_text(f'#!/bin/sh\nexec {name} "$@"\n')
        script.chmod(0o755)
    return directory


@pytest.fixture
def server(start_server: StartServer, shared_tmp: Path) -> ServerProcess:
    wrappers = _wrappers(shared_tmp / "wrappers")
    names = ("gcc", "g++", "clang", "shared-gcc", "shared-g++", "shared-clang")
    return start_server("--jobs", "2", *(a for n in names for a in ("--compiler", n)),
                        path_prepend=str(wrappers))  # fmt: skip


def test_the_status_page_says_which_compilers_run_sealed(server: ServerProcess) -> None:
    kinds = {name: c["sandbox"] for name, c in server.status()["compilers"].items()}
    expected = {"gcc": "sealed", "g++": "sealed", "clang": "sealed", "shared-gcc": "shared",
                "shared-g++": "shared", "shared-clang": "shared"}  # fmt: skip
    # (and gcc's and g++'s target-prefixed names, the same binaries)
    assert kinds == {**expected, "x86_64-linux-gnu-gcc": "sealed",
                     "x86_64-linux-gnu-g++": "sealed"}, kinds  # fmt: skip


@pytest.mark.parametrize("path", SERVER_FILES)
def test_a_sealed_job_cannot_read_a_server_file_the_shared_sandbox_shows(
    server: ServerProcess,
    path: str,
) -> None:
    for compiler in ("gcc", "clang"):
        shared = compile_on(server, (f"shared-{compiler}", "-c", "x.c", "-o", "x.o"), incbin(path))
        assert shared.status == 0 and len(shared.obj) > 1000, (compiler, path, shared.stderr)
        sealed = compile_on(server, (compiler, "-c", "x.c", "-o", "x.o"), incbin(path))
        assert sealed.status != 0 and not sealed.obj, (compiler, path)
        assert path.encode() in sealed.stderr, sealed.stderr


def test_a_sealed_job_has_no_proc(server: ServerProcess) -> None:
    """/proc says what machine the server is (gas quotes each line of an ``.include``
    it cannot assemble): the shared sandbox mounts one for its compilers; the sealed
    one has none."""
    text = b'__asm__(".include \\"/proc/cpuinfo\\"");\nint x;\n'
    shared = compile_on(server, ("shared-gcc", "-c", "x.c", "-o", "x.o"), text)
    assert b"processor" in shared.stderr, shared.stderr[-400:]
    sealed = compile_on(server, ("gcc", "-c", "x.c", "-o", "x.o"), text)
    assert sealed.status != 0 and b"processor" not in sealed.stderr, sealed.stderr[-400:]


@pytest.mark.parametrize("spelling", list(_spellings("/x")))
def test_no_spelling_the_reviews_found_reads_a_server_file_in_a_sealed_job(
    server: ServerProcess,
    spelling: str,
) -> None:
    """Every way four reviews got an ``.incbin`` past the text rules: in the shared
    sandbox the server's file is in the object; sealed, the compile finds nothing."""
    path = "/usr/lib/os-release"
    secret = Path(path).read_bytes()[:40]
    text = ('# 1 "/home/alice/p/a.c"\n' + _spellings(path)[spelling]).encode()
    shared = compile_on(server, ("shared-gcc", "-O0", "-c", "a.c", "-o", "a.o"), text)
    assert shared.status == 0 and secret in shared.obj, (spelling, shared.stderr[-400:])
    sealed = compile_on(server, ("gcc", "-O0", "-c", "a.c", "-o", "a.o"), text)
    assert sealed.status != 0 and secret not in sealed.obj, spelling


def test_what_a_sealed_job_can_read_is_its_toolchain_which_its_identity_covers(
    server: ServerProcess,
) -> None:
    version = subprocess.run(["gcc", "--version"], capture_output=True, text=True,
                             check=True).stdout.splitlines()[0]  # fmt: skip
    found = toolchain("/usr/bin/gcc", version)
    shell = os.path.realpath("/bin/sh")
    assert shell in found.files
    reply = compile_on(server, ("gcc", "-c", "x.c", "-o", "x.o"), incbin(shell))
    assert reply.status == 0 and Path(shell).read_bytes()[:4096] in reply.obj, reply.stderr


def _text(compiler: str, headers: tuple[str, ...], body: str) -> bytes:
    source = "".join(f"#include <{h}>\n" for h in headers) + body
    language = "c++" if "++" in compiler else "c"
    done = subprocess.run([compiler, "-E", "-x", language, "-"], input=source.encode(),
                          capture_output=True, check=True, timeout=60)  # fmt: skip
    return done.stdout


C_HEADERS = ("stdio.h", "stdlib.h", "string.h", "math.h", "wchar.h")
C_BODY = ('double f(double x) { char b[64]; snprintf(b, sizeof b, "%g é", sin(x));\n'
          "  return strtod(b, 0) + strlen(b); }\n")  # fmt: skip
CXX_BODY = (
    "std::string g(std::vector<int> v) { std::sort(v.begin(), v.end());\n"
    '  std::ostringstream o; o << v.size() << "é"; return o.str(); }\n'
)
CASES = [
    ("gcc", C_HEADERS, C_BODY, ("-O2",)),
    ("gcc", C_HEADERS, C_BODY, ("-O2", "-g")),
    ("gcc", C_HEADERS, C_BODY, ("-fPIC", "-fsanitize=address,undefined")),
    ("gcc", C_HEADERS, C_BODY, ("-finput-charset=ISO-8859-1", "-fexec-charset=UTF-16")),
    ("gcc", C_HEADERS, C_BODY, ("-flto", "-frandom-seed=1", "-fopenmp")),
    ("g++", ("string", "vector", "algorithm", "sstream"), CXX_BODY, ("-O2", "-g")),
    ("clang", C_HEADERS, C_BODY, ("-O2", "-g")),
    ("clang", C_HEADERS, C_BODY, ("-fsanitize=address,undefined", "-fPIC")),
    ("clang", C_HEADERS, C_BODY, ("-flto", "-fvisibility=hidden", "-O2")),
]


@pytest.mark.parametrize(("compiler", "headers", "body", "options"), CASES,
                         ids=[f"{c[0]} {' '.join(c[3])}" for c in CASES])  # fmt: skip
def test_a_sealed_compile_makes_the_object_the_shared_sandbox_makes(
    server: ServerProcess,
    compiler: str,
    headers: tuple[str, ...],
    body: str,
    options: tuple[str, ...],
) -> None:
    """No file a compile needs is missing from the sealed sandbox: gcc's iconv modules,
    clang's resource directory (its sanitizers' lists), the loader's libraries, the
    assembler. The objects are equal, with debug information too (both run in /tmp)."""
    text = b'# 1 "/home/alice/p/a.c"\n' + _text(compiler, headers, body)
    argv = (*options, "-c", "a.c", "-o", "a.o")
    sealed = compile_on(server, (compiler, *argv), text)
    shared = compile_on(server, (f"shared-{compiler}", *argv), text)
    assert sealed.status == 0 and shared.status == 0, (sealed.stderr, shared.stderr)
    assert sealed.obj == shared.obj and len(sealed.obj) > 1000


def test_a_balancer_stores_only_what_sealed_jobs_compiled(
    start_server: StartServer,
    start_balancer: StartBalancer,
    redis_server: RedisServer,
    shared_tmp: Path,
    tmp_path: Path,
) -> None:
    """A backend whose gcc is a wrapper script compiles in the shared sandbox, where a
    source could read a server file its key leaves out: the balancer compiles there but
    stores nothing, and counts why; a sealed backend's results are stored."""
    wrapped = shared_tmp / "wrapped"
    wrapped.mkdir(mode=0o755)
    for name in ("gcc", "x86_64-linux-gnu-gcc"):
        (wrapped / name).write_text('#!/bin/sh\nexec /usr/bin/gcc "$@"\n')
        (wrapped / name).chmod(0o755)
    shared = start_server("--jobs", "4", path_prepend=str(wrapped))
    assert shared.status()["compilers"]["gcc"]["sandbox"] == "shared"
    modules = 5
    balancer = cache_balancer(start_balancer, [shared], redis_server.url)
    project = write_c_project(tmp_path / "a", modules=modules)
    build(project, balancer)
    assert_identical_to_local(project)
    wait_until(lambda: cache_of(balancer)["not_stored_unsandboxed"] >= modules + 1, 20,
               "every reply judged")  # fmt: skip
    assert cache_of(balancer)["stored"] == 0
    assert redis.Redis.from_url(redis_server.url).dbsize() == 0

    sealed = start_server("--jobs", "4")
    assert sealed.status()["compilers"]["gcc"]["sandbox"] == "sealed"
    other = cache_balancer(start_balancer, [sealed], redis_server.url)
    build(write_c_project(tmp_path / "b", modules=modules), other)
    wait_until(lambda: cache_of(other)["stored"] >= modules + 1, 20, "every reply stored")


def _upgraded(driver: bytes) -> bytes:
    """gcc's driver as a rebuilt package might ship it: its configured default -march
    another (x86-64 -> znver2, a string of the same length), so a loop it vectorizes
    comes out in AVX2 (ymm registers)."""
    at = driver.index(b"\0x86-64\0")
    return driver[: at + 1] + b"znver2" + driver[at + 7 :]


def _ymm(obj: bytes, where: Path) -> int:
    (where / "o.o").write_bytes(obj)
    listing = subprocess.run(["objdump", "-d", str(where / "o.o")], capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
    return listing.count("ymm")


def test_an_upgraded_compiler_is_identified_again_before_its_objects_are_shared(
    start_server: StartServer, shared_tmp: Path, tmp_path: Path
) -> None:
    """A package upgrade renames new files over a compiler's while the server runs (a
    fourteenth review: the identity named the old compiler while new sandboxes ran the
    new one, whose objects were stored under the old identity). The server holds the
    files it identified: the next job finds them changed and is turned away (a balancer
    retries it elsewhere), the server identifies the new files, and after a moment for
    balancers to read the new identity, the new compiler's objects come under it."""
    fake = write_gcc_of_another_identity(shared_tmp / "upgraded")
    server = start_server("--jobs", "2", "--compiler", "gcc", path_prepend=str(fake))
    before = server.status()["compilers"]["gcc"]
    assert before["sandbox"] == "sealed", before
    argv = ("gcc", "-O3", "-c", "s.c", "-o", "s.o")

    def text(n: int) -> bytes:
        return (f'# 1 "/home/alice/p/s{n}.c"\nvoid f(float *restrict a, const float '
                f"*restrict b, int n) {{ for (int i = 0; i < n; i++) a[i] += b[i] * {n}.0f; "
                "}\n").encode()  # fmt: skip

    first = compile_on(server, argv, text(1))
    assert first.status == 0 and _ymm(first.obj, tmp_path) == 0, first.stderr
    new = fake / ".gcc.dpkg-new"
    new.write_bytes(_upgraded((fake / "gcc").read_bytes()))
    new.chmod(0o755)
    new.rename(fake / "gcc")  # (as dpkg installs a file)
    with pytest.raises(ClientError):
        compile_on(server, argv, text(2))  # turned away: closed without a reply
    wait_until(lambda: server.status()["compilers"]["gcc"]["digest"] != before["digest"], 60,
               "the new files identified")  # fmt: skip
    assert server.events("toolchain_changed"), "no line says why"
    after = wait_until(lambda: _compiled_or_none(server, argv, text(3)), 30,
                       "a job taken again after the settling moment")  # fmt: skip
    assert after.status == 0 and _ymm(after.obj, tmp_path) > 0  # the new compiler's AVX2
    assert server.status()["compilers"]["gcc"]["sandbox"] == "sealed"


def _compiled_or_none(server: ServerProcess, argv: tuple[str, ...], text: bytes) -> Reply | None:
    try:
        return compile_on(server, argv, text)
    except ClientError:
        return None
