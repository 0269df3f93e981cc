"""Acceptance 5: the classic distccd exploit and argument tricks are refused; nothing runs."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from client import compile_remote
from tests.support.servers import ServerProcess, live_children
from wire import Request

pytestmark = pytest.mark.integration

SOURCE = b"int main(void) { return 0; }\n"


def _attacks(evil: Path, marker: Path) -> dict[str, list[str]]:
    touch = f"touch {marker}"
    # A directory of "programs" gcc would run if -B were honoured.
    (evil / "as").write_text(f"#!/bin/sh\n{touch}\n")
    (evil / "as").chmod(0o755)
    (evil / "args").write_text(f"-wrapper /bin/sh,-c,'{touch}'\n")
    return {
        "cve-2004-2687": ["sh", "-c", touch, "#", "-c", "main.c", "-o", "main.o"],
        "absolute-compiler": ["/bin/sh", "-c", touch, "-c", "main.c"],
        "fplugin": ["gcc", f"-fplugin={evil}/plugin.so", "-c", "main.c", "-o", "main.o"],
        "wrapper": ["gcc", "-wrapper", f"/bin/sh,-c,{touch}", "-c", "main.c", "-o", "main.o"],
        "B-dir": ["gcc", f"-B{evil}/", "-c", "main.c", "-o", "main.o"],
        "B-separate": ["gcc", "-B", f"{evil}/", "-c", "main.c", "-o", "main.o"],
        "at-file": ["gcc", f"@{evil}/args", "-c", "main.c", "-o", "main.o"],
        "output-elsewhere": ["gcc", "-c", "main.c", "-o", str(marker)],
        "output-dotdot": ["gcc", "-c", "main.c", "-o", "../../../" + marker.name],
        "specs": ["gcc", f"-specs={evil}/specs", "-c", "main.c", "-o", "main.o"],
    }


@pytest.mark.parametrize("protocol", [1, 2])
def test_exploits_are_refused_and_nothing_runs(
    start_server: type[ServerProcess], shared_tmp: Path, protocol: int
) -> None:
    evil = shared_tmp / "evil"
    evil.mkdir(mode=0o777)
    evil.chmod(0o777)  # writable by the compile user, so a working attack could leave the mark
    marker = evil / "pwned"
    attacks = _attacks(evil, marker)
    server = start_server("--jobs", "2")

    async def send_all() -> dict[str, tuple[int, str]]:
        out = {}
        for name, argv in attacks.items():
            reply = await compile_remote(
                "127.0.0.1", server.port, Request(protocol, tuple(argv), SOURCE), timeout_s=30
            )
            out[name] = (reply.status, reply.stderr.decode())
        return out

    replies = asyncio.run(send_all())
    for name, (status, stderr) in replies.items():
        assert status != 0, name
        assert "job refused" in stderr, (name, stderr)
    assert not marker.exists(), "an attack ran something on the server"
    counters = server.counters()
    assert counters["rejected_policy"] == len(attacks)
    assert counters["ok"] == 0
    refused = server.events("job_refused")
    assert len(refused) == len(attacks)
    assert all(event["reason"] for event in refused)
    assert live_children(server.proc.pid) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="compilers change user only when started as root")
def test_compiler_runs_as_the_compile_user_niced_without_groups_in_its_own_session(
    start_server: type[ServerProcess], fake_compilers: tuple[Path, Path]
) -> None:
    import pwd

    bin_dir, markers = fake_compilers
    server = start_server("--compiler", "whoami-cc", "--nice", "7", "--user", "nobody",
                          path_prepend=str(bin_dir))  # fmt: skip
    reply = asyncio.run(compile_remote(
        "127.0.0.1", server.port, Request(1, ("whoami-cc", "-c", "a.c", "-o", "a.o"), SOURCE)
    ))  # fmt: skip
    assert reply.status == 0 and reply.obj, reply.stderr
    uid, groups, nice, session = (markers / "whoami").read_text().split("\n")[:4]
    nobody = pwd.getpwnam("nobody")
    assert int(uid) == nobody.pw_uid
    assert groups.split() == [str(nobody.pw_gid)]
    assert int(nice) == 7
    assert int(session) != os.getsid(server.proc.pid), "the compiler shares the server's session"
