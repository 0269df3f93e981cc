"""Admission: a fixed number of job slots; a job that finds none free is turned away."""

from __future__ import annotations

import pytest

from server.slots import Slots


def test_new_server_has_every_slot_free() -> None:
    slots = Slots(4)

    assert (slots.capacity, slots.busy, slots.free, slots.accepting) == (4, 0, 4, True)


@pytest.mark.parametrize("capacity", [0, -1])
def test_server_needs_at_least_one_slot(capacity: int) -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        Slots(capacity)


def test_each_admitted_job_takes_one_slot() -> None:
    slots = Slots(3)

    assert slots.try_acquire()
    assert slots.try_acquire()

    assert slots.busy == 2
    assert slots.free == 1


def test_job_is_turned_away_when_every_slot_is_busy() -> None:
    slots = Slots(2)
    assert slots.try_acquire()
    assert slots.try_acquire()

    assert not slots.try_acquire()
    assert slots.busy == 2
    assert slots.free == 0


def test_released_slot_admits_the_next_job() -> None:
    slots = Slots(1)
    assert slots.try_acquire()
    assert not slots.try_acquire()

    slots.release()

    assert slots.free == 1
    assert slots.try_acquire()


def test_releasing_a_slot_that_was_not_taken_is_an_error() -> None:
    slots = Slots(2)

    with pytest.raises(RuntimeError, match="not taken"):
        slots.release()
    assert slots.busy == 0


def test_draining_server_admits_nothing_and_shows_no_free_slots() -> None:
    slots = Slots(4)
    assert slots.try_acquire()

    slots.accepting = False

    assert slots.free == 0
    assert not slots.try_acquire()
    assert slots.busy == 1


def test_jobs_running_while_draining_still_release_their_slots() -> None:
    slots = Slots(2)
    assert slots.try_acquire()
    slots.accepting = False

    slots.release()

    assert slots.busy == 0
    assert slots.free == 0


def test_busy_never_exceeds_capacity_over_many_attempts() -> None:
    slots = Slots(5)

    admitted = sum(slots.try_acquire() for _ in range(50))

    assert admitted == 5
    assert slots.busy == slots.capacity


def test_connection_places_are_counted_per_ipv4_address_and_per_ipv6_64() -> None:
    """One host holds a whole IPv6 /64: it could spread idle connections over it, past
    any per-address cap, so a /64 is one holder (an IPv4-mapped address is its IPv4)."""
    from daemon.bounds import connection_holder

    assert connection_holder("10.1.2.3") == "10.1.2.3"
    assert connection_holder("2001:db8:1:2::5") == connection_holder("2001:db8:1:2:ffff::9")
    assert connection_holder("2001:db8:1:2::5") == "2001:db8:1:2::/64"
    assert connection_holder("2001:db8:1:3::5") != connection_holder("2001:db8:1:2::5")
    assert connection_holder("::ffff:10.1.2.3") == "10.1.2.3"
    assert connection_holder("?") == "?"


def test_each_busy_slot_names_the_connection_that_holds_it() -> None:
    slots = Slots(4)
    assert slots.try_acquire("127.0.0.1:4001")
    assert slots.try_acquire("[::1]:4002")
    assert slots.try_acquire("127.0.0.1:4001")  # (a client may reuse a port later)

    slots.release("127.0.0.1:4001")

    assert slots.holders == ["127.0.0.1:4001", "[::1]:4002"]
    slots.release("[::1]:4002")
    slots.release("127.0.0.1:4001")
    assert (slots.holders, slots.busy) == ([], 0)


def test_a_slot_is_given_back_only_by_its_holder() -> None:
    slots = Slots(2)
    assert slots.try_acquire("127.0.0.1:4001")

    with pytest.raises(RuntimeError, match=r"not taken by 127\.0\.0\.1:4002"):
        slots.release("127.0.0.1:4002")
    assert (slots.busy, slots.holders) == (1, ["127.0.0.1:4001"])
