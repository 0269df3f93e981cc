"""balancer/routing/compilers.py: which backends a job's compiler may go to (pure, fake clock)."""

from __future__ import annotations

from balancer.errors import NoCompiler
from balancer.routing.backend import Backend, BackendReport, BackendSpec
from balancer.routing.compilers import (
    MISSING_HOLD_S,
    CompilerRouting,
    base_name,
    listed_offers,
    version_in_object,
    version_key,
)

OLD = ("gcc (Debian 12.2.0-14) 12.2.0", "aaaa")
NEW = ("gcc (Debian 12.3.0-1) 12.3.0", "bbbb")


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def _backend(name: str, slots: int, compilers: dict[str, tuple[str, str]] | None,
             spec: str = "") -> Backend:  # fmt: skip
    backend = Backend(BackendSpec.parse(f"{name}:1{spec}"))
    if compilers is not None:
        backend.on_report(BackendReport(slots=slots, busy=0, compilers=compilers))
    backend.healthy = True
    return backend


def test_names_versions_and_objects() -> None:
    assert base_name("x86_64-linux-gnu-gcc") == "gcc" and base_name("c99-gcc") == "c99-gcc"
    assert listed_offers(frozenset({"gcc"}), "x86_64-linux-gnu-gcc")
    assert not listed_offers(frozenset({"gcc"}), "g++")
    assert version_key(OLD[0]) == version_key("GCC: (Debian 12.2.0-14) 12.2.0")
    assert version_in_object(b"\x7fELF...\x00GCC: (Debian 12.2.0-14) 12.2.0\x00.") == (
        "GCC: (Debian 12.2.0-14) 12.2.0"
    )


def test_jobs_go_only_where_the_compiler_is() -> None:
    routing = CompilerRouting()
    a = _backend("a", 4, {"gcc": OLD})
    b = _backend("b", 4, {"gcc": OLD, "g++": OLD})
    d = _backend("d", 4, None, ",kind=distccd,compilers=gcc")
    route = routing.route([a, b, d], "g++")
    assert route.exclude == {"a:1", "d:1"} and route.offered
    assert routing.route([a, b, d], "x86_64-linux-gnu-gcc").exclude == {"a:1", "b:1"}
    assert not routing.route([a, b, d], "clang").offered


def test_majority_pinned_and_any() -> None:
    old = [_backend(n, 4, {"gcc": OLD}) for n in ("o1", "o2")]
    new = [_backend("n1", 4, {"gcc": NEW})]
    everyone = [*old, *new]
    assert CompilerRouting("majority").route(everyone, "gcc").exclude == {"n1:1"}
    pinned = CompilerRouting("pinned", {"gcc": "12.3"})
    assert pinned.route(everyone, "gcc").exclude == {"o1:1", "o2:1"}
    assert CompilerRouting("pinned", {"gcc": "bbb"}).route(everyone, "gcc").exclude == {
        "o1:1",
        "o2:1",
    }
    assert not CompilerRouting("pinned", {"gcc": "13.1"}).route(everyone, "gcc").offered
    assert CompilerRouting("any").route(everyone, "gcc").exclude == frozenset()
    for backend in old:  # the old ones leave rotation: the new one has the most slots now
        backend.healthy = False
    assert CompilerRouting("majority").route(everyone, "gcc").exclude == {"o1:1", "o2:1"}


def test_a_backend_that_says_no_digest_joins_its_versions_group() -> None:
    routing = CompilerRouting()
    a = _backend("a", 2, {"gcc": OLD})
    b = _backend("b", 2, {"gcc": NEW})
    c = _backend("c", 2, {"gcc": NEW})
    d = _backend("d", 8, None, ",kind=distccd")
    routing.probed_version("d:1", "gcc", "GCC: (Debian 12.2.0-14) 12.2.0")
    # d's 8 slots join the old version's group (its digest unknown, its version the same)
    assert routing.route([a, b, c, d], "gcc").exclude == {"b:1", "c:1"}


def test_a_refusal_leaves_the_backend_out_until_a_report_or_the_hold_ends() -> None:
    clock = Clock()
    routing = CompilerRouting(clock=clock)
    a, b = _backend("a", 4, {"gcc": OLD}), _backend("b", 4, {"gcc": OLD})
    assert routing.route([a, b], "gcc").exclude == frozenset()
    routing.refused("a:1", "gcc")
    assert routing.route([a, b], "gcc").exclude == {"a:1"}
    clock.now += MISSING_HOLD_S + 1
    assert routing.route([a, b], "gcc").exclude == frozenset()
    routing.refused("b:1", "gcc")
    routing.reported("b:1")  # its compilers changed: it is taken at its word again
    assert routing.route([a, b], "gcc").exclude == frozenset()


def test_a_route_is_kept_until_something_it_depends_on_changes() -> None:
    routing = CompilerRouting()
    a = _backend("a", 4, {"gcc": OLD})
    first = routing.route([a], "gcc")
    assert routing.route([a], "gcc") is first
    routing.changed()
    assert routing.route([a], "gcc") is not first


def test_backends_not_yet_checked_make_a_job_wait_not_be_turned_away() -> None:
    fresh = Backend(BackendSpec.parse("new:1"))  # (no report, no probe yet: at start)
    route = CompilerRouting().route([fresh], "gcc")
    assert not route.offered and route.pending
    fresh.on_failure("probe: refused")  # checked, and down: nothing to wait for
    assert not CompilerRouting().route([fresh], "gcc").pending


def test_a_backend_that_says_no_version_is_not_kept_out_by_the_identity_choice() -> None:
    a = _backend("a", 8, {"g++": OLD})
    b = _backend("b", 2, {"g++": NEW})
    d = _backend("d", 4, None, ",kind=distccd")  # (its probe tells its gcc, not its g++)
    assert CompilerRouting().route([a, b, d], "g++").exclude == {"b:1"}


def test_a_farm_all_down_is_no_capacity_not_no_compiler() -> None:
    import random

    import pytest

    from balancer.dispatch.acquire import SlotTaker
    from balancer.pool.pool import Pool
    from balancer.routing.queue import SlotQueue
    from balancer.settings import DispatchSettings, PoolSettings

    pool = Pool([], PoolSettings())  # never started
    down = _backend("a", 4, {"gcc": OLD})
    down.healthy = False
    down.consecutive_fail = 2
    clang_only = _backend("b", 4, {"clang": OLD})
    taker = SlotTaker(pool, SlotQueue(), DispatchSettings(), set(), random.Random(1))
    pool.backends = {down.name: down}
    assert taker.nowhere("gcc") is False  # (the wait for a slot says "none in rotation")
    pool.backends = {down.name: down, clang_only.name: clang_only}
    pool.routing.changed()
    with pytest.raises(NoCompiler):
        taker.nowhere("gcc")
