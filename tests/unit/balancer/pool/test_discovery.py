"""Backends from DNS (balancer/pool/discovery.py), with answers the test gives: the TTL
bounded by the intervals, a failure or an empty answer keeps the last good set (counted),
a reload keeps a kept source's set and starts a new source, and a --backends-from-hosts
spec takes --backend's options or says why not."""

from __future__ import annotations

import asyncio

import pytest

from balancer.pool.discovery import Discovery, DnsSource
from balancer.routing.backend import SpecError
from client.discovery import DiscoveryError, Found


class DiscoveryForTests(Discovery):
    """Answers from a list the test fills (an exception: the ask fails)."""

    def __init__(self, sources: list[DnsSource], answers: list[Found | Exception]) -> None:
        self.changes = 0
        super().__init__(sources, self._changed, None, 5.0, 300.0)
        self.answers = answers
        self.now = 1000.0
        self.clock = lambda: self.now

    def _changed(self) -> None:
        self.changes += 1

    async def _resolve(self, source: DnsSource) -> Found:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def _found(*addresses: str, ttl: float | None = 30.0, port: int = 3632) -> Found:
    return Found(tuple((a, port, 10, "s.farm.test") for a in addresses), ttl)


SRV = DnsSource("srv", "farm.test")


@pytest.mark.asyncio
async def test_a_failure_or_an_empty_answer_keeps_the_last_good_set() -> None:
    discovery = DiscoveryForTests([SRV], [
        _found("10.0.0.1", "10.0.0.2"), DiscoveryError("timeout"), _found(), _found("10.0.0.2"),
        _found("10.0.0.2"),
    ])  # fmt: skip
    assert await discovery._ask(SRV)
    names = [s.name for s in discovery.specs()[SRV.label]]
    assert names == ["10.0.0.1:3632", "10.0.0.2:3632"]
    assert discovery.specs()[SRV.label][0].weight == 10.0  # (the SRV weight)
    assert discovery.specs()[SRV.label][0].status_port == 3633  # (--backend's rule)
    for _ in range(2):  # a failure, then an empty answer: the set stays
        assert not await discovery._ask(SRV)
        assert [s.name for s in discovery.specs()[SRV.label]] == names
    state = discovery.describe()[SRV.label]
    assert state["failures"] == 2 and state["last_error"] == "no servers in the answer"
    assert state["next_in_s"] == 5.0  # (after a failure: the min interval)
    # A backend missing from one good answer stays; from two in a row over 15 s, it goes.
    assert not await discovery._ask(SRV)
    discovery.now += 16
    assert await discovery._ask(SRV)
    assert [s.name for s in discovery.specs()[SRV.label]] == ["10.0.0.2:3632"]


@pytest.mark.asyncio
async def test_a_target_that_cannot_be_looked_up_keeps_its_servers() -> None:
    first = Found((("10.0.0.1", 3632, 10, "s1.farm.test"), ("10.0.0.2", 3632, 10, "s2.farm.test"),
                   ("10.0.0.3", 3632, 10, "s3.farm.test")), 30.0)  # fmt: skip
    # s2 cannot be looked up now, s3 is gone from the records, s4 is new.
    later = Found((("10.0.0.1", 3632, 10, "s1.farm.test"), ("10.0.0.4", 3632, 10, "s4.farm.test")),
                  30.0, failed=("s2.farm.test",))  # fmt: skip
    discovery = DiscoveryForTests([SRV], [first, later, later, later])
    await discovery._ask(SRV)
    await discovery._ask(SRV)
    await discovery._ask(SRV)  # (s3: missing from two answers, but not yet for 15 s)
    assert "10.0.0.3:3632" in [s.name for s in discovery.specs()[SRV.label]]
    discovery.now += 16
    await discovery._ask(SRV)
    assert [s.name for s in discovery.specs()[SRV.label]] == [
        "10.0.0.1:3632", "10.0.0.2:3632", "10.0.0.4:3632"
    ]  # fmt: skip
    assert "s2.farm.test" in str(discovery.describe()[SRV.label]["last_error"])


@pytest.mark.asyncio
@pytest.mark.parametrize(("ttl", "next_in"), [(0.0, 5.0), (30.0, 30.0), (86400.0, 300.0),
                                              (None, 300.0)])  # fmt: skip
async def test_the_next_ask_comes_at_the_ttl_within_the_intervals(
    ttl: float | None, next_in: float
) -> None:
    discovery = DiscoveryForTests([SRV], [_found("10.0.0.1", ttl=ttl)])
    await discovery._ask(SRV)
    assert discovery.describe()[SRV.label]["next_in_s"] == next_in


@pytest.mark.asyncio
async def test_a_reload_keeps_a_kept_sources_set_and_starts_a_new_source() -> None:
    hosts = DnsSource.hosts("distcc.farm.test:3632,kind=distccd")
    discovery = DiscoveryForTests([SRV], [_found("10.0.0.1")])
    await discovery._ask(SRV)
    discovery.start()
    fresh = DiscoveryForTests([SRV, hosts], [])
    discovery.answers = [_found("10.0.0.9", ttl=3600.0, port=3632)]
    asked_next = discovery.states[SRV.label].next_at
    discovery.adopt(fresh)
    try:
        assert [s.name for s in discovery.specs()[SRV.label]] == ["10.0.0.1:3632"]
        assert discovery.states[SRV.label].next_at == asked_next  # (not put off)
        for _ in range(100):  # (the new source is asked at once: a few loop turns)
            if discovery.specs()[hosts.label]:
                break
            await asyncio.sleep(0)
        assert [(s.name, s.kind) for s in discovery.specs()[hosts.label]] == [
            ("10.0.0.9:3632", "distccd")
        ]
    finally:
        discovery.close()


@pytest.mark.parametrize("text", ["distcc.farm.test", "distcc.farm.test:0",
                                  "distcc.farm.test:3632,bogus=1", ":3632"])  # fmt: skip
def test_a_hosts_source_takes_a_backend_specs_options_or_says_why_not(text: str) -> None:
    with pytest.raises(SpecError):
        DnsSource.hosts(text)
