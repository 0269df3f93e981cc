"""Times and counts the balancer refuses to start with (balancer/config.py): a negative
hedge time would make every job late at once (a copy of each on a second backend)."""

from __future__ import annotations

import pytest

from balancer.cli import load
from balancer.config import ConfigError


@pytest.mark.parametrize(
    ("flag", "says"),
    [("--hedge-after", "--hedge-after must not be negative"),
     ("--hedge-min", "--hedge-min must not be negative"),
     ("--queue-timeout", "--queue-timeout must not be negative")],
)  # fmt: skip
def test_a_negative_time_is_refused_with_its_flag(flag: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        load(["--backend", "127.0.0.1:3632", flag, "-1"])
    load(["--backend", "127.0.0.1:3632", flag, "0"])
