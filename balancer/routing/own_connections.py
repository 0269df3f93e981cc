"""Our connections to one backend, by local address, so that a report listing the
connections that hold its slots says exactly which are ours (pure).

Counting our jobs at the moment a report arrives is off by those in transit: a job
whose request is still on its way holds no slot yet, and one whose slot the server
gave back as its compile ended (before the reply) still counts as ours until the reply
is read. Either way the balancer would believe a slot free that is not, and send a
job the server turns away. A distlb server lists its slot holders (``IP:PORT`` as it
sees them); ours are those among them we have open, or closed a moment ago.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable

RECENTLY_CLOSED = 256
"""Closed connections remembered: a report read just after a reply may still list them."""


class OwnConnections:
    __slots__ = ("_closed", "_open", "matched")

    def __init__(self) -> None:
        self._open: Counter[str] = Counter()
        self._closed: OrderedDict[str, None] = OrderedDict()
        self.matched = False
        """A report has named one of ours: addresses are seen alike on both ends (no
        address translation between), so reports' lists can be trusted to find ours."""

    def opened(self, address: str) -> None:
        self._open[address] += 1

    def closed(self, address: str) -> None:
        if self._open[address] <= 1:
            self._open.pop(address, None)
        else:
            self._open[address] -= 1
        self._closed[address] = None
        self._closed.move_to_end(address)
        if len(self._closed) > RECENTLY_CLOSED:
            self._closed.popitem(last=False)

    def __len__(self) -> int:
        return sum(self._open.values())

    def ours_among(self, holders: Iterable[str]) -> int:
        """How many of a report's slot holders are our connections."""
        count = sum(1 for h in holders if h in self._open or h in self._closed)
        self.matched = self.matched or count > 0
        return count


class OpenedOn:
    """One connection, known to ``connections`` by its local address while it is open
    (pass it as :func:`client.compile_remote`'s ``on_connected``; :meth:`close` after);
    tells ``then`` the address too."""

    __slots__ = ("address", "connections", "then")

    def __init__(
        self, connections: OwnConnections, then: Callable[[str], None] | None = None
    ) -> None:
        self.connections = connections
        self.then = then
        self.address = ""

    def __call__(self, address: str) -> None:
        self.address = address
        self.connections.opened(address)
        if self.then is not None:
            self.then(address)

    def close(self) -> None:
        if self.address:
            self.connections.closed(self.address)
            self.address = ""
