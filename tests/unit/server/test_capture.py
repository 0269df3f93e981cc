"""A job's output pipes are read, and closed once, by the server (server/runner.py
``Capture``), on the loop the server runs (uvloop)."""

from __future__ import annotations

import asyncio
import io
import os

import uvloop

from server.runner import Capture


class _ProbedPipe(io.FileIO):
    """A pipe's read end that notes, as it closes, whether its number was still open:
    closed before by someone else, its own close is a second one, which closes whatever
    another thread has opened under that number meanwhile (uvloop's pipe transports did
    so: a job directory left with "Bad file descriptor", a client's socket reset)."""

    def __init__(self, fd: int) -> None:
        super().__init__(fd, "rb")
        self.states: list[str] = []

    def close(self) -> None:
        if not self.closed:
            try:
                os.fstat(self.fileno())
                self.states.append("open")
            except OSError as exc:
                self.states.append(f"closed already: {exc.strerror}")
        super().close()


def _capture(limit: int, written: bytes) -> tuple[_ProbedPipe, Capture]:
    async def main() -> tuple[_ProbedPipe, Capture]:
        read_end, write_end = os.pipe()
        pipe = _ProbedPipe(read_end)
        capture = Capture(limit, pipe)
        os.write(write_end, written)
        os.close(write_end)
        await asyncio.wait_for(capture.closed, 30)
        capture.close()  # (as run_started does: a second close changes nothing)
        return pipe, capture

    return uvloop.run(main())


def test_a_capture_reads_its_pipe_to_the_end_and_closes_it_once() -> None:
    pipe, capture = _capture(1 << 20, b"warning: x\n" * 1000)

    assert pipe.states == ["open"]  # (a pipe transport: ["closed already: ..."])
    assert capture.value() == b"warning: x\n" * 1000 and capture.dropped == 0


def test_what_passes_the_limit_is_counted_and_dropped() -> None:
    pipe, capture = _capture(1000, b"y" * 5000)

    assert pipe.states == ["open"]
    assert capture.dropped == 4200  # (1000 less the room kept for the note: 800 kept)
    assert capture.value() == b"y" * 800 + b"\ndistlb-server: 4200 more bytes of output dropped\n"
