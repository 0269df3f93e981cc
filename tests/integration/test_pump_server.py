"""Issue 29: pump mode (protocol 3) served by a real distlb-server with real gcc.

Requests are made here the way distcc's client makes them (wire.writer's encoder:
``CDIR``, the command line as typed, the files with their absolute names, and the
include server's links to the server's own system directories, found the way the
include server finds them: ``gcc -E -v``). A good request's object and dependency
file must equal a local build's in the same directory, byte for byte (with -g: the
compile ran at the client's own paths). Every hostile request gets a protocol 3 failure
that says why, and nothing of it is written outside the job: each test looks for what
it tried to make.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from server.pump import ask_include_dirs
from server.pump_headers import DigestMemo, headers_fingerprint
from tests.support.servers import (
    Distccd,
    ServerProcess,
    StartBalancer,
    StartServer,
    wait_until,
)
from wire import Reply, ReplyReader
from wire.events import PumpEntry, PumpRequest
from wire.pump import MARKER
from wire.tokens import encode
from wire.writer import encode_pump_request

pytestmark = pytest.mark.integration

GCC = "/usr/bin/gcc"
UPS = "../" * 24
MAIN = '#include <stdio.h>\n#include "util.h"\nint main(void) { printf("%d\\n", util(2)); }\n'
UTIL_H = "#pragma once\n#define TWICE(x) ((x) * 2)\nint util(int);\nstatic int unused_%s;\n"


def system_links() -> tuple[PumpEntry, ...]:
    dirs = ask_include_dirs(os.path.realpath(GCC))
    assert "/usr/include" in dirs
    return tuple(PumpEntry(d, link=UPS + d[1:]) for d in dirs)


def project(root: Path) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "include").mkdir()
    (root / "build").mkdir()
    (root / "src" / "main.c").write_text(MAIN)
    (root / "include" / "util.h").write_text(UTIL_H % "x")
    return root / "build"


ARGV = ("gcc", "-g", "-O1", "-I../include", "-DGREETING=1", "-MD", "-c", "../src/main.c",
        "-o", "main.o", "-MT", "main.o")  # fmt: skip


def request_for(build: Path, argv: tuple[str, ...] = ARGV, *extra: PumpEntry) -> PumpRequest:
    root = build.parent
    files = [root / "src" / "main.c", root / "include" / "util.h"]
    entries = [PumpEntry(str(f), body=f.read_bytes()) for f in files]
    entries.append(PumpEntry(f"{build}/{MARKER}"))
    return PumpRequest(3, str(build), argv, (*entries, *system_links(), *extra))


def send(port: int, data: bytes) -> Reply | None:
    """The reply to ``data``, or None when the server closed without one."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
        conn.sendall(data)
        reader = ReplyReader(3)
        while True:
            chunk = conn.recv(1 << 16)
            if not chunk:
                return None
            reader.feed(chunk)
            event = reader.next_event()
            if isinstance(event, Reply):
                return event


def local_build(build: Path, argv: tuple[str, ...]) -> tuple[bytes, bytes]:
    """The object and .d gcc makes here, then removed (the tree stays as sent)."""
    subprocess.run([GCC, *argv[1:]], cwd=build, check=True, timeout=60)
    obj, deps = (build / "main.o").read_bytes(), (build / "main.d").read_bytes()
    (build / "main.o").unlink()
    (build / "main.d").unlink()
    return obj, deps


@pytest.fixture
def server(start_server: StartServer) -> ServerProcess:
    return start_server("--compiler", "gcc", "--jobs", "2")


def test_a_pump_job_makes_the_same_object_and_dependency_file_as_a_local_build(
    server: ServerProcess, tmp_path: Path
) -> None:
    build = project(tmp_path / "proj")
    obj, deps = local_build(build, ARGV)

    reply = send(server.port, encode_pump_request(request_for(build)))

    assert reply is not None and reply.status == 0, reply and reply.stderr
    assert reply.obj == obj  # (with -g: DW_AT_comp_dir and the file names are the client's)
    assert reply.deps == deps
    assert b"../include/util.h" in deps and b"/usr/include/stdio.h" in deps
    assert str(build).encode() in reply.obj  # (the compile ran in the client's own directory)
    done = server.logged("job_done")
    assert done["pump"] is True and done["outcome"] == "ok" and done["files"] == 2
    assert not list(build.glob("main.*"))  # (nothing came back here but the reply)
    # What a balancer routes pump jobs by: the system directories it serves them with,
    # and (read after it is ready) their headers' fingerprint.
    gcc = wait_until(
        lambda: server.status()["compilers"]["gcc"].get("pump_headers") and server.status(),
        10, "the headers' fingerprint",
    )["compilers"]["gcc"]  # fmt: skip
    assert "/usr/include" in gcc["pump"].split("\n")
    assert gcc["pump_headers"] == headers_fingerprint(gcc["pump"].split("\n"), DigestMemo(None))


def test_without_an_explicit_output_the_default_object_is_sent(
    server: ServerProcess, tmp_path: Path
) -> None:
    build = project(tmp_path / "proj")
    argv = ("gcc", "-I../include", "-c", "../src/main.c")

    reply = send(server.port, encode_pump_request(request_for(build, argv)))

    assert reply is not None and reply.status == 0, reply and reply.stderr
    subprocess.run([GCC, *argv[1:]], cwd=build, check=True, timeout=60)
    assert reply.obj == (build / "main.o").read_bytes()


RANDOM_DATA = (
    '__asm__(".data\\n.set s, 1\\n.rept 2097152\\n.set s, (s * 1103515245 + 12345) & '
    '0x7fffffff\\n.long s\\n.endr\\n.text");\n'
)
"""8 MiB of data LZO cannot shrink, made by the assembler (about 2 s)."""


def test_a_pump_job_gives_back_its_slot_before_its_reply_is_sent(
    start_server: StartServer, tmp_path: Path
) -> None:
    """As a plain job does: a client that has its reply may send its next job at once
    (``make -jN`` against ``--jobs N``); it found the slot still held while the server
    finished sending (git's libgit.a through the real pump client was turned away so).
    Here the first client never reads its 8 MiB reply, more than the sockets hold: the
    server is still sending it when the next job comes, to a server of one slot."""
    server = start_server("--compiler", "gcc", "--jobs", "1")
    build = project(tmp_path / "proj")
    (build.parent / "src" / "main.c").write_text(RANDOM_DATA + MAIN)
    argv = ("gcc", "-I../include", "-c", "../src/main.c", "-o", "main.o")
    first = socket.socket()
    first.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # (before connecting)
    first.settimeout(60)
    with first:
        first.connect(("127.0.0.1", server.port))
        first.sendall(encode_pump_request(request_for(build, argv)))
        wait_until(lambda: server.status()["reply_memory"]["bytes"] > 8 << 20, 60,
                   "the big reply being sent (held within the reply budget)")  # fmt: skip
        assert server.status()["busy"] == 0  # (its slot given back meanwhile)
        (build.parent / "src" / "main.c").write_text(MAIN)
        reply = send(server.port, encode_pump_request(request_for(build, argv)))
        assert reply is not None and reply.status == 0, reply and reply.stderr
        # (the first reply was still being sent: its job is not done)
        assert server.logged("job_done")["bytes_out"] < 1 << 20
        assert server.status()["reply_memory"]["bytes"] > 8 << 20
        assert len(server.events("job_done")) == 1


def test_a_pump_reply_past_the_reply_budget_keeps_its_slot_until_sent(
    start_server: StartServer, tmp_path: Path
) -> None:
    """The bound on what slow readers hold: an 8 MiB reply past ``--reply-memory-mb 4``
    keeps its job's slot while it is sent, so a reader that never reads holds one slot's
    reply, not the server's memory; the next job is turned away meanwhile."""
    server = start_server("--compiler", "gcc", "--jobs", "1", "--reply-memory-mb", "4")
    build = project(tmp_path / "proj")
    (build.parent / "src" / "main.c").write_text(RANDOM_DATA + MAIN)
    argv = ("gcc", "-I../include", "-c", "../src/main.c", "-o", "main.o")
    first = socket.socket()
    first.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # (before connecting)
    first.settimeout(60)
    with first:
        first.connect(("127.0.0.1", server.port))
        first.sendall(encode_pump_request(request_for(build, argv)))
        wait_until(lambda: server.status()["reply_memory"]["refused"] == 1, 60,
                   "the big reply found past the budget")  # fmt: skip
        assert server.status()["busy"] == 1 and server.status()["reply_memory"]["bytes"] == 0
        (build.parent / "src" / "main.c").write_text(MAIN)
        assert send(server.port, encode_pump_request(request_for(build, argv))) is None


def test_a_compile_error_is_the_compilers_own(server: ServerProcess, tmp_path: Path) -> None:
    build = project(tmp_path / "proj")
    (build.parent / "src" / "main.c").write_text('#include "util.h"\nint main(void) { nope(); }\n')
    argv = ("gcc", "-Werror", "-I../include", "-c", "../src/main.c", "-o", "main.o")

    reply = send(server.port, encode_pump_request(request_for(build, argv)))

    assert reply is not None and reply.status != 0 and reply.obj == b"" and reply.deps == b""
    assert b"main.c:2" in reply.stderr and b"nope" in reply.stderr


def hostile(build: Path, victim: Path) -> dict[str, PumpRequest]:
    """Requests that try to reach ``victim`` (outside the tree), each its own way."""
    root = build.parent
    base = request_for(build)
    out = str(victim)
    climb = "../" * (str(root).count("/") + 1)

    def with_(*entries: PumpEntry, argv: tuple[str, ...] = ARGV) -> PumpRequest:
        return PumpRequest(3, base.cwd, argv, (*base.entries, *entries))

    return {
        "dot-dot in a name": with_(PumpEntry(f"{root}/{climb}{out[1:]}", body=b"owned\n")),
        "absolute link out": with_(PumpEntry(f"{root}/include/evil.h", link=out)),
        "relative link out": with_(PumpEntry(f"{root}/include/evil.h", link=climb + out[1:])),
        "a link at the root to the host's dir": with_(  # (review 18: bubblewrap followed it)
            PumpEntry("/hostdir", link=str(victim.parent)),
            PumpEntry(f"{victim.parent}/dummy.h", body=b""),
            PumpEntry(
                f"{root}/src/evil.c", body=b'#include "/hostdir/victim.h"\nint x = SECRET;\n'
            ),
            argv=("gcc", "-c", "../src/evil.c", "-o", "e.o"),
        ),
        "65 top-level names": with_(*(PumpEntry(f"/top{i}/x.h", body=b"") for i in range(65))),
        "a component over NAME_MAX": with_(PumpEntry(f"{root}/{'c' * 300}/h.h", body=b"")),
        "link chain": with_(
            PumpEntry(f"{root}/include/a.h", link="util.h"),
            PumpEntry(f"{root}/include/b.h", link="a.h"),
        ),
        "a system header's name": with_(PumpEntry("/usr/include/stdio.h", body=b"#error x\n")),
        "system shape, not searched": with_(PumpEntry("/etc/ssl", link=UPS + "etc/ssl")),
        "-I outside the tree": with_(argv=("gcc", "-I/etc", "-c", "../src/main.c", "-o", "m.o")),
        "-include outside the tree": with_(
            argv=("gcc", "-include", out, "-c", "../src/main.c", "-o", "m.o")
        ),
        "-I of the sysroot": with_(argv=("gcc", "-I=/etc", "-c", "../src/main.c", "-o", "m.o")),
        "output outside the tree": with_(
            argv=("gcc", "-I../include", "-c", "../src/main.c", "-o", "/etc/evil.o")
        ),
        "an output 30,000 components deep": with_(  # (review 19: quadratic, 1 GB)
            argv=("gcc", "-I../include", "-c", "../src/main.c", "-o", "a/" * 30_000 + "x.o")
        ),
        "output under a file sent": with_(
            argv=("gcc", "-I../include", "-c", "../src/main.c", "-o", "../src/main.c/x.o")
        ),
        "-I @FILE (the driver reads it as options)": with_(
            PumpEntry(f"{root}/src/opts", body=b"-fplugin=/x.so\n"),
            argv=("gcc", "-I", "@opts", "-c", "../src/main.c", "-o", "m.o"),
        ),
        "-MF @FILE": with_(argv=("gcc", "-MD", "-MF", "@opts", "-c", "../src/main.c")),
        "-I@FILE (cc1 reads it as options)": with_(
            argv=("gcc", "-I@opts", "-c", "../src/main.c", "-o", "m.o")
        ),
        "a source not sent": with_(argv=("gcc", "-c", "/etc/passwd.c", "-o", "m.o")),
        "-Wp, carrying an include": with_(
            argv=("gcc", f"-Wp,-include,{out}", "-c", "../src/main.c", "-o", "m.o")
        ),
    }


HOSTILE = ("dot-dot in a name", "absolute link out", "relative link out",
           "a link at the root to the host's dir", "65 top-level names",
           "a component over NAME_MAX", "link chain",
           "a system header's name", "system shape, not searched", "-I outside the tree",
           "-include outside the tree", "-I of the sysroot", "output outside the tree",
           "an output 30,000 components deep", "output under a file sent",
           "-I @FILE (the driver reads it as options)", "-MF @FILE",
           "-I@FILE (cc1 reads it as options)", "a source not sent",
           "-Wp, carrying an include")  # fmt: skip


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_pump_request_is_answered_with_why_and_touches_nothing(
    case: str, server: ServerProcess, tmp_path: Path
) -> None:
    build = project(tmp_path / "proj")
    victim = tmp_path / "victim.h"  # (outside the tree: the request never sends it)
    victim.write_text("#define SECRET 42\n")
    requests = hostile(build, victim)
    assert tuple(requests) == HOSTILE
    request = requests[case]

    reply = send(server.port, encode_pump_request(request))

    assert reply is not None, "closed without a reply"
    assert reply.status != 0 and reply.obj == b"" and b"job refused" in reply.stderr
    assert victim.read_text() == "#define SECRET 42\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj", "victim.h"]
    assert server.logged("job_refused")["pump"] is True
    assert server.job_dirs() == []


@pytest.mark.parametrize("case", ["a million files", "an LZO bomb"])
def test_an_oversized_pump_request_is_closed_from_its_claims(
    case: str, server: ServerProcess, tmp_path: Path
) -> None:
    build = project(tmp_path / "proj")
    if case == "a million files":
        head = encode_pump_request(PumpRequest(3, str(build), ARGV, ()))
        data = head[: -len(encode(b"NFIL", 0))] + encode(b"NFIL", 1_000_000)
    else:
        bomb = PumpEntry(f"{build}/bomb.h", body=b"\0" * (600 << 20))  # (inflates past 512 MiB)
        data = encode_pump_request(PumpRequest(3, str(build), ARGV, (bomb,)))
        assert len(data) < (4 << 20)

    assert send(server.port, data) is None

    assert "NFIL" in str(server.logged("bad_request")) or "decompressed" in str(
        server.logged("bad_request")
    )
    reply = send(server.port, encode_pump_request(request_for(build)))  # (and it goes on)
    assert reply is not None and reply.status == 0


def test_with_pump_off_the_request_is_answered_with_why(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server("--compiler", "gcc", "--pump", "off")
    build = project(tmp_path / "proj")

    reply = send(server.port, encode_pump_request(request_for(build)))

    assert reply is not None and reply.status != 0
    assert b"pump mode is off on this server (--pump off)" in reply.stderr
    assert "pump" not in server.status()["compilers"]["gcc"]  # (no balancer sends it any)


SPY = r"""#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    static const char *paths[] = {PATHS};
    char cwd[4096];
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-c") != 0) continue;
        for (size_t k = 0; k < sizeof paths / sizeof paths[0]; k++)
            fprintf(stderr, "%s %s\n", access(paths[k], F_OK) == 0 ? "seen" : "absent", paths[k]);
        fprintf(stderr, "cwd %s\n", getcwd(cwd, sizeof cwd) ? cwd : "?");
        fprintf(stderr, "path %s\n", getenv("PATH"));
    }
    argv[0] = "/usr/bin/gcc";
    execv(argv[0], argv);
    return 127;
}
"""


def test_the_job_sees_only_its_tree_and_the_toolchain(
    start_server: StartServer, fake_compilers: tuple[Path, Path], tmp_path: Path
) -> None:
    """A subverted compiler in a pump job (a stand-in: a gcc driver binary that reports
    what it can reach, then runs the real gcc), installed under /tmp as the tests'
    stand-ins are: it sees the client's tree at its own paths (under /tmp too) and the
    system headers; not the server's other files, nor what the client did not send."""
    victim = tmp_path / "victim.h"
    victim.write_text("secret\n")
    build = project(tmp_path / "proj")
    hidden = ["/home", "/root", "/srv", "/opt", "/etc/passwd", "/etc/hostname", str(victim),
              "/proc/cmdline", "/proc/self/status"]  # fmt: skip
    shown = [f"{tmp_path}/proj/src/main.c", "/usr/include/stdio.h"]
    spy_c = tmp_path / "spy.c"
    spy_c.write_text(SPY.replace("PATHS", ", ".join(f'"{p}"' for p in hidden + shown)))
    tools = fake_compilers[0]
    subprocess.run([GCC, "-O1", str(spy_c), "-o", str(tools / "gcc")], check=True, timeout=60)
    server = start_server("--compiler", "gcc", path_prepend=str(tools))
    assert server.status()["compilers"]["gcc"]["path"] == str(tools / "gcc")

    reply = send(server.port, encode_pump_request(request_for(build)))

    assert reply is not None and reply.status == 0, reply and reply.stderr
    said = reply.stderr.decode()
    for path in shown:
        assert f"seen {path}" in said, said
    for path in hidden:
        assert f"absent {path}" in said, said
    assert f"cwd {build}" in said
    # (only the toolchain's directories: a request may make the server's own PATH's)
    assert f"path {tools}:/usr/bin:/bin\n" in said


def test_hostile_pump_requests_through_the_balancer_never_reach_a_backend(
    server: ServerProcess, start_balancer: StartBalancer, tmp_path: Path
) -> None:
    """The balancer checks and judges a pump request as a server does: each hostile one
    is answered by the balancer itself, and the backend never hears of it."""
    balancer = start_balancer("--backend", f"127.0.0.1:{server.port},status={server.stats_port}")
    balancer.wait_healthy(1)
    build = project(tmp_path / "proj")
    victim = tmp_path / "victim.h"
    victim.write_text("#define SECRET 42\n")

    for case, request in hostile(build, victim).items():
        reply = send(balancer.port, encode_pump_request(request))
        assert reply is not None and reply.status != 0, case
        assert b"distlb-balancer: job refused" in reply.stderr, (case, reply.stderr)

    wait_until(lambda: len(balancer.events("job_refused")) == len(HOSTILE), 10, "every line")
    assert server.events("job_done") == [] and server.events("job_refused") == []
    good = send(balancer.port, encode_pump_request(request_for(build)))  # (and one that is fine)
    assert good is not None and good.status == 0 and good.deps
    assert server.logged("job_done")["pump"] is True


def test_a_balancer_sends_pump_jobs_to_no_distccd(
    distccd: Distccd, start_balancer: StartBalancer, tmp_path: Path
) -> None:
    """distccd's pump support follows a name's .. and a link's target as given: a
    balancer never sends it a pump job (nor anything of the request), and says why."""
    balancer = start_balancer("--backend", f"127.0.0.1:{distccd.port},kind=distccd")
    balancer.wait_healthy(1)
    build = project(tmp_path / "proj")

    reply = send(balancer.port, encode_pump_request(request_for(build)))

    assert reply is not None and reply.status != 0
    assert b"no backend serves pump mode" in reply.stderr
    assert balancer.totals()["in_flight"] == 0
    assert [b["sent"] for b in balancer.status()["backends"]] == [0]


def test_a_pump_job_of_a_sealed_compiler_reads_no_other_file_of_usr(
    server: ServerProcess, tmp_path: Path
) -> None:
    """A compiler whose toolchain the server holds sealed runs its pump jobs with that
    toolchain and the system include directories only (and the GCC installation clang
    finds libstdc++ through): a source cannot read the rest of /usr back."""
    assert server.status()["compilers"]["gcc"]["sandbox"] == "sealed"
    build = project(tmp_path / "proj")
    (build.parent / "src" / "main.c").write_text('#include "/usr/share/common-licenses/GPL-3"\n')

    reply = send(server.port, encode_pump_request(request_for(build)))

    assert reply is not None and reply.status != 0
    assert b"GPL-3: No such file or directory" in reply.stderr, reply.stderr
    assert b"GNU GENERAL PUBLIC LICENSE" not in reply.stderr
