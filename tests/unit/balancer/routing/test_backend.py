"""Backend SPECs, the free-slot estimate and rise/fall health (balancer/routing/backend.py)."""

from __future__ import annotations

import pytest

from balancer.routing.backend import Backend, BackendReport, BackendSpec, SpecError
from balancer.routing.own_connections import OpenedOn
from client.quantiles import quantile


def test_spec_defaults_to_a_distlb_server_with_status_on_port_plus_one() -> None:
    spec = BackendSpec.parse("10.0.0.5:3632")
    assert (spec.host, spec.port, spec.status_port, spec.kind, spec.weight) == (
        "10.0.0.5", 3632, 3633, "distlb", 1.0,
    )  # fmt: skip


def test_spec_options() -> None:
    spec = BackendSpec.parse("build1:4000,status=4100,kind=distccd,weight=2.5,slots=8")
    assert (spec.status_port, spec.kind, spec.weight, spec.slots) == (4100, "distccd", 2.5, 8)
    assert BackendSpec.parse("[::1]:3632").host == "::1"


def test_distccd_without_status_has_no_status_port() -> None:
    assert BackendSpec.parse("h:3632,kind=distccd").status_port is None


@pytest.mark.parametrize(
    "text",
    ["nohost", ":3632", "h:notaport", "h:70000", "h:1,bogus=1", "h:1,kind=haproxy",
     "h:1,weight=0", "h:1,slots=0", "h:1,status=x", "h:1,weight"],
)  # fmt: skip
def test_bad_specs_are_refused_with_the_spec_named(text: str) -> None:
    with pytest.raises(SpecError, match=r"h:|nohost|:3632"):
        BackendSpec.parse(text)


def _backend(slots: int = 4) -> Backend:
    backend = Backend(BackendSpec.parse("h:1"), rise=2, fall=2)
    backend.on_report(BackendReport(slots=slots, busy=0))
    return backend


def test_free_slots_count_others_from_the_report_and_ours_now() -> None:
    backend = _backend(4)
    backend.in_flight = 1
    backend.on_report(BackendReport(slots=4, busy=3))  # our 1 + 2 of another balancer's
    assert backend.free == 4 - 2 - 1
    backend.in_flight = 0  # ours finished since the report
    assert backend.free == 2
    backend.in_flight = 3
    assert backend.free == 0


def _job(backend: Backend, address: str) -> OpenedOn:
    """One of our jobs on ``backend``: its slot reserved, its connection open."""
    backend.in_flight += 1
    opened = OpenedOn(backend.connections)
    opened(address)
    return opened


def test_a_report_listing_slot_holders_counts_ours_in_transit_exactly() -> None:
    backend = _backend(4)
    first = _job(backend, "127.0.0.1:5001")  # its slot given back before its reply
    _job(backend, "127.0.0.1:5002")  # holds a slot
    _job(backend, "127.0.0.1:5003")  # request still on its way: no slot yet
    # The server: our 5002 and another balancer's job; 5001's compile is over.
    report = BackendReport(slots=4, busy=2, holders=("127.0.0.1:5002", "10.0.0.9:7000"))
    backend.on_report(report)

    assert backend.others == 1
    assert backend.free == 4 - 1 - 3  # (counting ours at the report: 4 - max(0, 2 - 3) - 3 = 1)
    first.close()
    backend.in_flight -= 1  # its reply read
    assert backend.free == 1


def test_holders_count_only_once_one_is_seen_to_be_ours() -> None:
    # Behind address translation the server sees other addresses than ours: it must not
    # take all of ours for others' (the count at the report is used instead).
    backend = _backend(4)
    _job(backend, "127.0.0.1:5001")
    backend.on_report(BackendReport(slots=4, busy=1, holders=("192.0.2.1:9999",)))

    assert (backend.connections.matched, backend.others, backend.free) == (False, 0, 3)


def test_a_connection_just_closed_is_still_known_as_ours() -> None:
    backend = _backend(4)
    job = _job(backend, "127.0.0.1:5001")
    _job(backend, "127.0.0.1:5002")
    job.close()
    backend.in_flight -= 1  # its reply read before the report that still lists it
    backend.on_report(BackendReport(slots=4, busy=2, holders=("127.0.0.1:5001", "127.0.0.1:5002")))

    assert (backend.others, backend.free) == (0, 3)


def test_a_server_that_stopped_accepting_has_no_free_slot() -> None:
    backend = _backend()
    backend.on_report(BackendReport(slots=4, busy=0, accepting=False))
    assert backend.free == 0


def test_unreported_backend_uses_configured_slots() -> None:
    backend = Backend(BackendSpec.parse("h:1,kind=distccd,slots=6"))
    backend.in_flight = 2
    assert (backend.slots, backend.free) == (6, 4)


def test_health_starts_unknown_one_good_probe_brings_it_in() -> None:
    backend = Backend(BackendSpec.parse("h:1"), rise=2, fall=2)
    assert not backend.healthy
    backend.on_success()
    assert backend.healthy


def test_fall_failures_take_it_out_and_rise_successes_bring_it_back() -> None:
    backend = Backend(BackendSpec.parse("h:1"), rise=2, fall=2)
    backend.on_success()
    backend.on_failure("probe: refused")
    assert backend.healthy
    backend.on_failure("probe: refused")
    assert not backend.healthy and backend.last_error == "probe: refused"
    backend.on_success()
    assert not backend.healthy
    backend.on_success()
    assert backend.healthy


def test_a_turn_away_makes_it_unavailable_until_the_next_report() -> None:
    backend = _backend()
    backend.on_success()
    backend.on_turned_away(now=100.0, hold_s=0.5)
    assert not backend.available(100.2)
    backend.on_report(BackendReport(slots=4, busy=1))
    assert backend.available(100.2)


def test_latency_quantiles() -> None:
    backend = _backend()
    assert backend.latency_quantile(0.5) is None
    for ms in range(1, 101):
        backend.record_latency(ms / 1000)
    assert backend.latency_quantile(0.5) == pytest.approx(0.051)
    assert backend.latency_quantile(0.95) == pytest.approx(0.096)


def test_quantiles_are_nearest_rank_and_none_without_samples() -> None:
    assert quantile([], 0.5) is None
    assert quantile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert quantile([1.0, 2.0, 3.0, 4.0], 0.5) == 3.0  # rank int(0.5 * 4) of the sorted
    assert quantile([1.0, 2.0, 3.0], 1.0) == 3.0 and quantile([1.0, 2.0], 0.0) == 1.0
