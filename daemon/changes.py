"""One waitable signal, for tasks that wait for "something changed" while others keep
changing it: each :meth:`Changes.next` is a future that the next :meth:`Changes.notify`
completes. A fresh future is made only when someone waits, so a notify with nobody
waiting costs nothing."""

from __future__ import annotations

import asyncio


class Changes:
    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None

    def notify(self) -> None:
        """Wake whoever waits on the current future (and start a new one for the next)."""
        future, self._future = self._future, None
        if future is not None and not future.done():
            future.set_result(None)

    def next(self) -> asyncio.Future[None]:
        """Done at the next :meth:`notify` (await it under ``asyncio.wait``, not
        ``wait_for``: it is shared, and must not be cancelled by one waiter)."""
        if self._future is None:
            self._future = asyncio.get_running_loop().create_future()
        return self._future
