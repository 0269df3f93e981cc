"""The ways a job ends undispatched: the client compiles it locally (floor 1).

What lives here: the exceptions a connection answers by telling the client to compile
locally, under one base. What must not: anything that decides when they are raised
(``routing/queue.py``, ``dispatch/``) or how they are answered (``connection.py``).
"""

from __future__ import annotations


class NotDispatched(Exception):
    """No backend compiled the job; the client compiles it locally. ``history``: the
    job's attempts, as the dispatcher describes them (set as it gives up)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.history: list[dict[str, object]] = []


class NoCapacity(NotDispatched):
    """No healthy backend had a free slot within the queue timeout."""


class AllFailed(NotDispatched):
    """Every attempt failed; the last reason is the message."""


class NoCompiler(NotDispatched):
    """No backend in rotation offers the job's compiler (in the chosen identity): the
    client compiles locally, at once."""

    def __init__(self, compiler: str) -> None:
        super().__init__(f"no backend in rotation runs {compiler!r} (in the chosen identity)")
        self.compiler = compiler
