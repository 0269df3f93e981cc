"""The judge, live: argument exploits are refused by the server and by the balancer
(in front of distlb servers and of a real distccd), and nothing they ask for runs."""

from __future__ import annotations

import asyncio
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from client import compile_remote
from daemon.bounds import JOB_REFUSAL_LOG_BURST
from tests.support.servers import (
    Distccd,
    StartBalancer,
    StartServer,
    live_children,
    wait_until,
)
from wire import Request

pytestmark = pytest.mark.integration

SOURCE = b"int main(void) { return 0; }\n"
SECRET = "DISTLB_SECRET_4f1e9c"


@dataclass(frozen=True)
class Attack:
    argv: tuple[str, ...]
    source: bytes = SOURCE
    leaks: bool = False
    """Proves itself by the secret file's contents in stderr (else: by the marker file)."""


def _attacks(evil: Path, marker: Path, secret: Path) -> dict[str, Attack]:
    touch = f"touch {marker}"
    no_space = f'touch${{IFS}}{marker};exec${{IFS}}"$0"${{IFS}}"$@"'
    # A directory of "programs" gcc would run if -B were honoured.
    (evil / "as").write_text(f"#!/bin/sh\n{touch}\n")
    (evil / "as").chmod(0o755)
    (evil / "args").write_text(f"-wrapper /bin/sh,-c,'{touch}'\n")
    including = f'#include "{secret}"\nint x;\n'.encode()
    # Response files inside option values (issue 26): GNU as expands @FILE before it
    # parses its options. A file of KEY=VALUE lines (an env file) comes back line by
    # line: the first is taken as --defsym's value, the rest as input file names, each
    # named in an error; a file that holds options makes as write a listing anywhere.
    env_file = secret.with_name("service.env")
    env_file.write_text(f"DB_USER=admin\nDB_PASSWORD={SECRET}\n")
    env_file.chmod(0o644)
    (evil / "listing-args").write_text(f"X=1\n-alm={marker}\n")
    at_env = f"@{env_file}"
    return {
        "cve-2004-2687": Attack(("sh", "-c", touch, "#", "-c", "main.c", "-o", "main.o")),
        "absolute-compiler": Attack(("/bin/sh", "-c", touch, "-c", "main.c")),
        "wrapper": Attack(("gcc", "-wrapper", f"/bin/sh,-c,{touch}", "-c", "main.c")),
        "B-dir": Attack(("gcc", f"-B{evil}/", "-c", "main.c", "-o", "main.o")),
        "B-separate": Attack(("gcc", "-B", f"{evil}/", "-c", "main.c", "-o", "main.o")),
        "at-file": Attack(("gcc", f"@{evil}/args", "-c", "main.c", "-o", "main.o")),
        "compare-debug-wrapper": Attack(
            ("gcc", "-c", f"-fcompare-debug=-wrapper /bin/sh,-c,{no_space}", "main.c")
        ),
        "module-mapper-pipe": Attack(
            ("g++", "-c", "-fmodules-ts", f"-fmodule-mapper=|{touch}", "main.cc", "-o", "m.o")
        ),
        "no-preprocessed-include": Attack(
            ("gcc", "-c", "-fno-preprocessed", "main.c"), including, leaks=True
        ),
        "directives-only-include": Attack(
            ("gcc", "-c", "-fdirectives-only", "main.c"), including, leaks=True
        ),
        "clang-MJ": Attack(("clang", "-c", f"-MJ{marker}", "main.c", "-o", "main.o")),
        "clang-llvm-output-file": Attack(
            (
                "clang",
                "-c",
                "-mllvm",
                f"-info-output-file={marker}",
                "-mllvm",
                "-stats",
                "main.c",
                "-o",
                "main.o",
            )
        ),
        "specs-untrusted": Attack(("gcc", f"-specs={evil}/specs", "-c", "main.c", "-o", "m.o")),
        "defsym-at-file": Attack(
            ("gcc", "-c", "main.c", "-o", "out.o", f"-Wa,--defsym,{at_env}"), leaks=True
        ),
        "defsym-at-file-two-Wa": Attack(
            ("gcc", "-c", "main.c", "-o", "out.o", "-Wa,--defsym", f"-Wa,{at_env}"), leaks=True
        ),
        "defsym-at-file-Xassembler-then-Wa": Attack(
            ("gcc", "-c", "main.c", "-o", "out.o", "-Xassembler", "--defsym", f"-Wa,{at_env}"),
            leaks=True,
        ),
        "defsym-at-file-Wa-then-Xassembler": Attack(
            ("gcc", "-c", "main.c", "-o", "out.o", "-Wa,--defsym", "-Xassembler", at_env),
            leaks=True,
        ),
        "include-dir-at-file": Attack(
            ("gcc", "-c", "main.c", "-o", "out.o", f"-I{at_env}"), leaks=True
        ),
        "defsym-stderr-listing": Attack(
            ("gcc", "-c", "main.c", "-o", "out.o", "-Wa,--defsym,@/proc/self/fd/2"),
            # The source writes the assembler's options: its own warning, read back from
            # stderr (a file under distccd), after a line marker that names "X=1".
            f'# 1 "X=1"\n#pragma GCC warning "-alm={marker}"\nint x;\n'.encode(),
        ),
        "defsym-own-source": Attack(
            # On distlb-server the job's source is /tmp/input.i: its comments would be
            # read as the assembler's options.
            ("gcc", "-c", "main.c", "-o", "out.o", "-Wa,--defsym,@/tmp/input.i"),
            f"//X=1\n// -alm={marker}\nint x;\n".encode(),
        ),
        "defsym-at-file-listing": Attack(
            ("gcc", "-c", "main.c", "-o", "out.o", f"-Wa,--defsym,@{evil}/listing-args")
        ),
    }


@pytest.fixture
def attack_setup(shared_tmp: Path) -> tuple[dict[str, Attack], Path, Path]:
    evil = shared_tmp / "evil"
    evil.mkdir(mode=0o777)
    evil.chmod(0o777)  # writable by the compile user, so a working attack could leave the mark
    marker = evil / "pwned"
    secret = shared_tmp / "secret.txt"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o644)
    (evil / "specs").write_text(f"*cc1_options:\n+ %:getenv(HOME {marker})\n")
    return _attacks(evil, marker, secret), marker, secret


def _proved(attack: Attack, stderr: str, marker: Path) -> bool:
    return SECRET in stderr if attack.leaks else marker.exists()


@pytest.mark.parametrize(
    "name",
    ["compare-debug-wrapper", "module-mapper-pipe", "no-preprocessed-include",
     "directives-only-include", "clang-MJ", "clang-llvm-output-file", "wrapper",
     "defsym-at-file", "defsym-at-file-two-Wa", "defsym-at-file-Xassembler-then-Wa",
     "defsym-at-file-Wa-then-Xassembler", "include-dir-at-file", "defsym-at-file-listing"],
)  # fmt: skip
def test_each_payload_works_where_nothing_judges_it(
    attack_setup: tuple[dict[str, Attack], Path, Path], tmp_path: Path, name: str
) -> None:
    """The attacks are real: run by the compiler itself, each does its harm (so the
    tests below, where nothing happens, could fail)."""
    attacks, marker, _ = attack_setup
    attack = attacks[name]
    source = tmp_path / ("main.ii" if attack.argv[0] == "g++" else "main.i")
    source.write_bytes(attack.source)
    argv = [a if not a.startswith("main.") else str(source) for a in attack.argv]
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert _proved(attack, done.stderr, marker), (argv, done.stderr)


RESPONSE_FILE_ATTACKS = (
    "defsym-at-file", "defsym-at-file-two-Wa", "defsym-at-file-Xassembler-then-Wa",
    "defsym-at-file-Wa-then-Xassembler", "include-dir-at-file", "defsym-at-file-listing",
    "defsym-stderr-listing",
)  # fmt: skip


def test_response_files_in_values_do_their_harm_on_a_bare_distccd(
    distccd: Distccd, attack_setup: tuple[dict[str, Attack], Path, Path]
) -> None:
    """What the review reproduced (issue 26): sent straight to Debian's distccd, each
    @FILE hidden in a value makes its assembler return the file's lines in stderr or
    write a listing where the client chose; so the balancer must refuse them."""
    attacks, marker, _ = attack_setup
    for name in RESPONSE_FILE_ATTACKS:
        replies = _send_all(distccd.port, {name: attacks[name]}, 2)
        assert _proved(attacks[name], replies[name][1], marker), (name, replies[name])
        marker.unlink(missing_ok=True)


def _send_all(port: int, attacks: dict[str, Attack], protocol: int) -> dict[str, tuple[int, str]]:
    async def send() -> dict[str, tuple[int, str]]:
        out = {}
        for name, attack in attacks.items():
            request = Request(protocol, attack.argv, attack.source)
            reply = await compile_remote("127.0.0.1", port, request, timeout_s=30)
            out[name] = (reply.status, reply.stderr.decode())
        return out

    return asyncio.run(send())


def _assert_all_refused(
    replies: dict[str, tuple[int, str]], attacks: dict[str, Attack], marker: Path, who: str
) -> None:
    for name, (status, stderr) in replies.items():
        assert status != 0, name
        assert f"{who}: job refused" in stderr, (name, stderr)
        assert not _proved(attacks[name], stderr, marker), name
    assert not marker.exists(), "an attack ran something on the server"


@pytest.mark.parametrize("protocol", [1, 2])
def test_exploits_are_refused_by_the_server_and_nothing_runs(
    start_server: StartServer,
    attack_setup: tuple[dict[str, Attack], Path, Path],
    protocol: int,
) -> None:
    attacks, marker, _ = attack_setup
    server = start_server("--jobs", "2")

    _assert_all_refused(_send_all(server.port, attacks, protocol), attacks, marker,
                        "distlb-server")  # fmt: skip
    counters = server.counters()
    assert counters["rejected_policy"] == len(attacks)
    assert counters["ok"] == 0
    # (the log is read by a thread: the last lines may come after the replies)
    wait_until(lambda: len(server.events("job_refused")) >= len(attacks), 10, "the refusals logged")
    refused = server.events("job_refused")
    assert len(refused) == len(attacks)
    assert all(event["reason"] for event in refused)
    assert live_children(server.proc.pid) == []


@pytest.mark.parametrize("backend_kind", ["distlb", "distccd"])
def test_exploits_are_refused_by_the_balancer_before_any_backend(
    start_server: StartServer,
    start_balancer: StartBalancer,
    distccd_stats: Distccd,
    attack_setup: tuple[dict[str, Attack], Path, Path],
    backend_kind: str,
) -> None:
    attacks, marker, _ = attack_setup
    if backend_kind == "distccd":
        spec = f"127.0.0.1:{distccd_stats.port},status={distccd_stats.stats_port},kind=distccd"
    else:
        server = start_server("--jobs", "2")
        spec = f"127.0.0.1:{server.port},status={server.stats_port}"
    balancer = start_balancer("--backend", spec)
    balancer.wait_healthy(1)
    sent_before = balancer.status()["backends"][0]["sent"]

    _assert_all_refused(_send_all(balancer.port, attacks, 2), attacks, marker,
                        "distlb-balancer")  # fmt: skip
    assert balancer.totals()["rejected_policy"] == len(attacks)
    assert balancer.status()["backends"][0]["sent"] == sent_before, "a refused job was sent"
    wait_until(lambda: len(balancer.events("job_refused")) >= len(attacks), 10,
               "the refusals logged")  # fmt: skip
    assert len(balancer.events("job_refused")) == len(attacks)


def test_dash_x_c_is_compiled_as_preprocessed_so_the_source_cannot_include(
    start_server: StartServer,
    attack_setup: tuple[dict[str, Attack], Path, Path],
    tmp_path: Path,
) -> None:
    """-x c is accepted (real builds use it) but rewritten: gcc would otherwise preprocess
    the sent source again and read the file its #include names."""
    _, _, secret = attack_setup
    server = start_server("--jobs", "1")
    source = f'#include "{secret}"\nint x;\n'.encode()
    reply = asyncio.run(compile_remote(
        "127.0.0.1", server.port, Request(1, ("gcc", "-x", "c", "-c", "a.c", "-o", "a.o"), source)
    ))  # fmt: skip
    assert SECRET not in reply.stderr.decode()
    assert reply.status != 0  # an #include line is a syntax error in a preprocessed file


def _through_balancer_to_distccd(
    start_balancer: StartBalancer, distccd: Distccd, argv: tuple[str, ...], source: bytes
) -> tuple[int, str]:
    balancer = start_balancer(
        "--backend", f"127.0.0.1:{distccd.port},kind=distccd,slots=2,compilers=gcc"
    )
    balancer.wait_healthy(1)
    reply = asyncio.run(
        compile_remote("127.0.0.1", balancer.port, Request(2, argv, source), timeout_s=60)
    )
    return reply.status, reply.stderr.decode("utf-8", "replace")


def test_a_linker_value_cannot_become_distccds_output_and_free_an_option(
    start_balancer: StartBalancer,
    distccd: Distccd,
    attack_setup: tuple[dict[str, Attack], Path, Path],
) -> None:
    """The review's command on a real distccd (finding 1): distccd replaces the argument
    after the first literal -o with its temp object, so '-Xlinker -o -Xlinker X' freed X,
    a value the judge had left to a linker that never runs, as an option of its own:
    here -fcompare-debug=, which runs a command. Linker options are left out of what a
    backend is sent: the job compiles, and nothing runs."""
    _, marker, _ = attack_setup
    no_space = f'touch${{IFS}}{marker};exec${{IFS}}"$0"${{IFS}}"$@"'
    payload = f"-fcompare-debug=-wrapper /bin/sh,-c,{no_space}"
    argv = ("gcc", "-c", "-Xlinker", "-o", "-Xlinker", payload, "in.c")

    status, stderr = _through_balancer_to_distccd(start_balancer, distccd, argv, b"int x;\n")

    assert not marker.exists(), "distccd ran the command"
    assert status == 0, stderr


def test_distccd_compiles_the_sent_source_not_a_file_the_client_names(
    start_balancer: StartBalancer, distccd: Distccd, shared_tmp: Path
) -> None:
    """The review's variant (finding 1): with '-o x.c', distccd put its temp source in
    place of x.c (the first argument that looks like a source) and compiled the input the
    client named, a file of distccd's machine, whose lines came back in stderr. The
    output is now always a fixed name, after the compiler, and the input follows it."""
    server_file = shared_tmp / "server_side.c"
    server_file.write_text(f"#error {SECRET}\n")
    server_file.chmod(0o644)
    argv = ("gcc", "-c", "-o", "x.c", str(server_file))

    status, stderr = _through_balancer_to_distccd(start_balancer, distccd, argv, b"int harmless;\n")

    assert SECRET not in stderr
    assert status == 0, stderr


@pytest.mark.parametrize("who", ["distlb-server", "distlb-balancer"])
def test_a_refusal_quotes_a_long_argument_cut_short(
    start_server: StartServer, start_balancer: StartBalancer, who: str
) -> None:
    """The trust review (finding 3): a 64 KiB argument of control bytes, quoted whole
    twice in the reason, made a 722 KB job_refused line and a 328 KB reply. What is
    quoted of an argument is cut as the logged command line is (200 characters)."""
    server = start_server("--jobs", "1")
    daemon = server
    if who == "distlb-balancer":
        daemon = start_balancer("--backend", f"127.0.0.1:{server.port},status={server.stats_port}")
    argv = ("gcc", "-c", "x.c", "-" + "\x01" * 65535)

    reply = asyncio.run(compile_remote("127.0.0.1", daemon.port, Request(1, argv, SOURCE)))

    assert reply.status != 0 and f"{who}: job refused" in reply.stderr.decode()
    assert len(reply.stderr) < 4096, len(reply.stderr)
    daemon.logged("job_refused")
    [line] = [line for line in daemon.lines if "job_refused" in line]
    assert len(line) < 16384, len(line)


def test_a_flood_of_refused_jobs_is_logged_within_the_refusal_budget(
    start_server: StartServer,
) -> None:
    """Refused jobs are logged a build's worth at a time (64), then once a second, each
    line with how many it left out (a review's refused requests wrote 90 MB of log a
    second)."""
    server = start_server("--jobs", "2")
    refused = Request(1, ("gcc", "-c", "a.c", "-fplugin=x.so"), b"int x;\n")
    started = time.monotonic()

    async def flood() -> None:
        for _ in range(200):
            reply = await compile_remote("127.0.0.1", server.port, refused, timeout_s=30)
            assert reply.status != 0

    asyncio.run(flood())
    elapsed = time.monotonic() - started
    # A job's line comes after every refusal's: once it is read, so are they.
    job = Request(1, ("gcc", "-c", "f.c", "-o", "f.o"), b"int f;\n")
    assert asyncio.run(compile_remote("127.0.0.1", server.port, job, timeout_s=60)).status == 0
    server.logged("job_done")
    lines = server.events("job_refused")
    assert 64 <= len(lines) <= JOB_REFUSAL_LOG_BURST + elapsed + 12, len(lines)
    assert server.counters()["rejected_policy"] == 200
