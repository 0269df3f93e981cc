"""Host words (client/discovery.py) keep the options a user wrote, and distlb-probe
(client/probe_cli.py) says them again in the qualified list."""

from __future__ import annotations

import pytest

from client.discovery import DiscoveryError, parse_host_entry
from client.probe_cli import host_word
from client.prober import ProbeResult


def test_a_host_word_keeps_its_options_and_its_status_port() -> None:
    target = parse_host_entry("build1:4000/8,lzo,status=4100,cpp")
    assert target is not None
    assert (target.host, target.port, target.slots) == ("build1", 4000, 8)
    assert target.status_port == 4100
    assert target.options == ("lzo", "cpp")
    with pytest.raises(DiscoveryError):
        parse_host_entry("build1:4000,status=x")


def test_the_qualified_word_says_the_options_again_once_each() -> None:
    target = parse_host_entry("build1:4000/4,lzo,auth,status=4100")
    assert target is not None
    result = ProbeResult(target, True, 0.01, slots=6)
    assert host_word(result, False, "") == "build1:4000/6,lzo,auth"
    assert host_word(result, False, "lzo,cpp") == "build1:4000/6,lzo,auth,cpp"
