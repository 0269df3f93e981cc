"""HAProxy agent-check answers: the share of free slots as a weight, drain when stopping."""

from __future__ import annotations

import pytest

from server.agent import agent_line
from server.slots import Slots


def busy_slots(capacity: int, busy: int) -> Slots:
    slots = Slots(capacity)
    for _ in range(busy):
        assert slots.try_acquire()
    return slots


def test_idle_server_is_up_at_full_weight() -> None:
    assert agent_line(busy_slots(8, 0)) == "up 100% maxconn:8\n"


@pytest.mark.parametrize(
    ("capacity", "busy", "line"),
    [
        (4, 1, "up 75% maxconn:4\n"),
        (4, 2, "up 50% maxconn:4\n"),
        (3, 1, "up 66% maxconn:3\n"),
        (1, 0, "up 100% maxconn:1\n"),
    ],
)
def test_weight_is_the_share_of_free_slots_rounded_down(
    capacity: int, busy: int, line: str
) -> None:
    assert agent_line(busy_slots(capacity, busy)) == line


def test_full_server_is_up_at_zero_weight() -> None:
    assert agent_line(busy_slots(2, 2)) == "up 0% maxconn:2\n"


def test_draining_server_says_drain() -> None:
    slots = busy_slots(4, 1)
    slots.accepting = False

    assert agent_line(slots) == "drain maxconn:0\n"


def test_answer_is_one_ascii_line() -> None:
    line = agent_line(busy_slots(16, 5))

    assert line.isascii()
    assert line.endswith("\n")
    assert line.count("\n") == 1
