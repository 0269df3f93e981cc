"""Jobs the sandbox tests send: a compile, a source that ``.incbin``s a file, an action
for the ``evil-cc`` stand-in, and one job reading another running job's source."""

from __future__ import annotations

import asyncio

from client import compile_remote
from tests.support.servers import ServerProcess, wait_until
from wire import Reply, Request


def compile_on(server: ServerProcess, argv: tuple[str, ...], source: bytes) -> Reply:
    return asyncio.run(
        compile_remote("127.0.0.1", server.port, Request(1, argv, source), timeout_s=60)
    )


def incbin(path: str) -> bytes:
    """A source whose object would hold the bytes of ``path``."""
    return f'__asm__(".section .rodata\\n.incbin \\"{path}\\"\\n.text");\nint x;\n'.encode()


def evil(server: ServerProcess, action: str) -> Reply:
    """A job for ``evil-cc`` (tests/support/compilers.py), which does ``action`` first."""
    source = f"/* {action} */\nint e;\n".encode()
    return compile_on(server, ("evil-cc", "-c", "e.c", "-o", "e.o"), source)


def read_a_running_jobs_source(server: ServerProcess, secret: str) -> tuple[Reply, int]:
    """While a ``slow-cc`` job whose source holds ``secret`` runs, a gcc job that
    ``.incbin``s that source; returns its reply and the uid that owned the running job's
    directory (the slow job must still compile)."""
    other = f"/* {secret} */ int other;\n".encode()

    async def scenario() -> tuple[Reply, int]:
        slow = asyncio.create_task(compile_remote(
            "127.0.0.1", server.port, Request(1, ("slow-cc", "-c", "o.c"), other), timeout_s=60
        ))  # fmt: skip
        dirs = await asyncio.to_thread(wait_until, server.job_dirs, 30, "the slow job's dir")
        owner = dirs[0].stat().st_uid
        reply = await compile_remote(
            "127.0.0.1", server.port,
            Request(1, ("gcc", "-c", "x.c"), incbin(str(next(dirs[0].glob("input*"))))),
            timeout_s=60,
        )  # fmt: skip
        assert (await slow).status == 0
        return reply, owner

    return asyncio.run(scenario())
