"""Fair share (balancer/routing/fair.py) on a fake clock: a share's rank is its recent
compile time (decaying, its running jobs' time so far included) over its weight; the
wake order goes by rank, then by how long a job waited; a job leaves a free slot to a
lighter share's waiting job of the same kind, never to its own share nor to a job of
another kind; alone, a share yields to no one; and through the real wait loop
(balancer/routing/queue.py), a freed slot goes to the light share while a heavy one
floods."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from pathlib import Path

import pytest

from balancer.routing.fair import FairShare, Share
from balancer.routing.groups import GroupsError, GroupsFile, Who, parse_groups
from balancer.routing.queue import YIELD_MAX_S, SlotQueue, acquire, take_now
from balancer.workers.shares import IDLE_S, ShareTable, kind_bit
from tests.unit.balancer.routing.test_queue import B, FakeClock, SlotSourceForTests, settle


class FairSourceForTests(SlotSourceForTests):
    """A gcc job's way to a slot, counted in ``fair`` as JobSlots counts one."""

    def __init__(self, fair: FairShare, share: Share, pick: Callable[[], B | None]) -> None:
        super().__init__(pick, lambda: False, 10.0, who=share)
        self.fair, self.share = fair, share

    def yields(self) -> bool:
        return self.fair.yields(self.share, "gcc")

    def wait_begins(self) -> None:
        super().wait_begins()
        self.fair.wait_begins(self.share, "gcc")

    def wait_ends(self) -> None:
        super().wait_ends()
        self.fair.wait_ends(self.share, "gcc")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _fair(clock: Clock, enabled: bool = True, table: ShareTable | None = None) -> FairShare:
    return FairShare(table or ShareTable(), memory_s=60.0, enabled=enabled, clock=clock)


def _heavy_and_light() -> tuple[FairShare, Share, Share]:
    """Fair share with two shares: "heavy" used 30 s of compile time just now."""
    clock = Clock()
    fair = _fair(clock)
    heavy, light = fair.share(Who("heavy")), fair.share(Who("light"))
    began = fair.started(heavy)
    clock.now += 30
    fair.ended(heavy, began)
    return fair, heavy, light


def test_rank_is_recent_compile_time_decaying_with_running_time_counted_at_once() -> None:
    clock = Clock()
    fair = _fair(clock)
    a = fair.share(Who("a"))
    began = fair.started(a)
    clock.now += 10
    assert fair.rank(a) == pytest.approx(10.0)  # running: its time so far counts
    fair.ended(a, began)
    assert fair.rank(a) == pytest.approx(10.0)
    clock.now += 60
    assert fair.rank(a) == pytest.approx(10.0 / math.e)  # one memory later
    heavy = fair.share(Who("ci", weight=0.5))
    began = fair.started(heavy)
    clock.now += 5
    fair.ended(heavy, began)
    assert fair.rank(heavy) == pytest.approx(10.0)  # 5 s over weight 0.5


def test_a_job_yields_only_to_a_lighter_share_waiting_for_the_same_kind() -> None:
    fair, heavy, light = _heavy_and_light()
    assert not fair.yields(heavy, "gcc")  # nobody waits
    fair.wait_begins(heavy, "gcc")
    assert not fair.yields(heavy, "gcc")  # its own share's jobs are in order already
    assert not fair.yields(light, "gcc")  # a heavier share waits: the light one goes
    fair.wait_begins(light, "clang")
    assert not fair.yields(heavy, "gcc")  # a clang job could not use a gcc slot
    fair.wait_begins(light, "gcc")
    assert fair.yields(heavy, "gcc")
    assert not fair.yields(heavy, "clang pump") or fair.yields(heavy, "clang")
    fair.wait_ends(light, "gcc")
    fair.wait_ends(light, "clang")
    assert not fair.yields(heavy, "gcc")
    fair.enabled = False
    fair.wait_begins(light, "gcc")
    assert not fair.yields(heavy, "gcc")  # off: nobody yields


def test_the_wake_order_is_by_rank_then_by_how_long_each_waited() -> None:
    fair, heavy, light = _heavy_and_light()
    rank = fair.order()
    assert rank(light) < rank(heavy)
    assert rank(None) == 0.0
    fair.enabled = False
    assert fair.order()(heavy) == fair.order()(light) == 0.0


@pytest.mark.asyncio
async def test_a_change_wakes_the_lightest_share_first() -> None:
    fair, heavy, light = _heavy_and_light()
    queue = SlotQueue(FakeClock())
    queue.ranks = fair.order
    woken: list[str] = []

    async def wait(name: str, since: float, who: Share) -> None:
        await queue.wait(60, since, who)
        woken.append(name)

    tasks = [
        asyncio.ensure_future(wait(name, since, who))
        for name, since, who in (
            ("heavy-old", 1.0, heavy), ("light-new", 5.0, light), ("light-old", 2.0, light),
            ("heavy-new", 3.0, heavy),
        )
    ]  # fmt: skip
    await settle()
    queue.notify()
    await asyncio.gather(*tasks)
    assert woken == ["light-old", "light-new", "heavy-old", "heavy-new"]


@pytest.mark.asyncio
async def test_a_freed_slot_goes_to_the_light_share_not_to_the_floods_new_job() -> None:
    clock = Clock()
    fair = _fair(clock)
    heavy, light = fair.share(Who("heavy")), fair.share(Who("light"))
    for _ in range(4):  # the flood holds the farm's 4 slots
        fair.started(heavy)
    clock.now += 10
    queue = SlotQueue(FakeClock())
    queue.ranks = fair.order
    free: list[B] = []

    def source(share: Share) -> SlotSourceForTests:
        how = FairSourceForTests(fair, share, lambda: free[0] if free else None)
        how.reserve = lambda backend: bool(free and free.pop(0))  # type: ignore[method-assign]
        return how

    light_how = source(light)
    light_job = asyncio.ensure_future(acquire(queue, light_how, queue.waiting(10.0)))
    await settle()
    assert not light_job.done() and light_how.registered == 1
    # A slot frees; before the woken light job runs, the flood's next job arrives and
    # finds it free: it leaves it to the light job.
    free.append(B("s1"))
    assert take_now(source(heavy)) is None
    queue.notify()
    assert await light_job == B("s1")
    assert light_how.registered == 0
    # Nobody waits now: the flood's job takes the next free slot at once.
    free.append(B("s2"))
    assert take_now(source(heavy)) == B("s2")


def test_a_share_alone_yields_to_no_one() -> None:
    clock = Clock()
    fair = _fair(clock)
    alone = fair.share(Who("alone"))
    for _ in range(8):
        fair.started(alone)
    clock.now += 100
    fair.wait_begins(alone, "gcc")  # its own jobs wait too
    assert not fair.yields(alone, "gcc")


@pytest.mark.asyncio
async def test_a_job_that_gives_up_waiting_wakes_those_that_yielded_to_it() -> None:
    clock = Clock()
    fair = _fair(clock)
    light = fair.share(Who("light"))
    queue = SlotQueue(FakeClock())
    how = SlotSourceForTests(lambda: None, lambda: False, 10.0, who=light)
    job = asyncio.ensure_future(acquire(queue, how, queue.waiting(10.0)))
    await settle()
    other = asyncio.ensure_future(queue.wait(60))
    await settle()
    job.cancel()
    await settle()
    assert other.done()  # woken: the slot it left may be taken now
    assert how.registered == 0


def test_workers_see_each_others_waiting_and_use() -> None:
    clock = Clock()
    table = ShareTable(workers=2)
    first = _fair(clock, table=table)
    light = first.share(Who("light"))
    table.become(1)
    heavy = first.share(Who("heavy"))
    began = first.started(heavy)  # worker 1's job of the heavy share
    clock.now += 20
    table.become(0)
    assert table.waiting_elsewhere() == 0
    first.wait_begins(light, "gcc")  # worker 0's light job waits
    table.become(1)
    assert table.waiting_elsewhere() == 1
    assert first.rank(heavy) == pytest.approx(20.0)  # worker 1 sees its running job
    second = _fair(clock, table=table)
    assert second.anyone_waits() and second.yields(heavy, "gcc")
    table.forget(0)  # worker 0 died: its waiting job went with it
    assert table.waiting_elsewhere() == 0
    first.ended(heavy, began)
    table.become(0)
    assert first.rank(heavy) == pytest.approx(20.0)


def test_a_full_table_takes_back_idle_shares_and_counts_the_rest_together() -> None:
    table = ShareTable(capacity=4)  # 3 shares, and the overflow's entry
    first = [table.entry(f"client-{n}", 0.0) for n in range(3)]
    assert sorted(first) == [0, 1, 2]
    assert table.entry("client-0", 0.0) == first[0]
    table.started(first[0], 0.0)  # client-0's job runs
    # Full, and nobody idle for an hour: a new share counts in the overflow's entry.
    assert table.entry("client-3", 10.0) == 3
    assert table.use(3, 10.0, 60.0).name == "(others)"
    # An hour on, client-1 and client-2 (nothing running or waiting) are taken back;
    # client-0, whose job still runs, keeps its entry and its use.
    later = IDLE_S + 1.0
    taken = table.entry("client-4", later)
    assert taken in first[1:]
    assert table.use(taken, later, 60.0) == table.use(taken, later, 60.0)
    assert table.use(taken, later, 60.0).name == "client-4"
    assert table.use(taken, later, 60.0).recent_s == 0.0
    assert table.entry("client-0", later) == first[0]
    assert table.use(first[0], later, 60.0).running == 1


def test_who_waits_is_found_without_reading_every_share() -> None:
    table = ShareTable(workers=2, capacity=64)
    names = [table.entry(f"client-{n}", 0.0) for n in range(40)]
    table.become(1)
    table.set_waiting(names[7], 2, 1)
    table.set_waiting(names[9], 1, 1)
    table.become(0)
    table.set_waiting(names[3], 1, 1)
    assert table.waiting_entries() == {names[3], names[7], names[9]}
    assert table.waiting_elsewhere() == 3
    table.become(1)
    table.set_waiting(names[7], 0, 0)
    assert table.waiting_entries() == {names[3], names[9]}
    assert table.waiting_elsewhere() == 1


def test_the_groups_file_names_shares_and_weights(tmp_path: Path) -> None:
    path = tmp_path / "groups.toml"
    path.write_text(
        'people = ["alice@EXAMPLE.COM", "198.18.4.0/24"]\n'
        '[ci]\nmembers = ["ci@EXAMPLE.COM", "198.18.0.0/16"]\nweight = 0.25\n'
    )
    clock = Clock()
    groups_file = GroupsFile(str(path), clock=clock)
    groups = groups_file.load()
    assert groups.who("198.18.4.7", None) == Who("people", 1.0)  # the longest prefix
    assert groups.who("198.18.9.7", None) == Who("ci", 0.25)
    assert groups.who("::ffff:198.18.9.7", None) == Who("ci", 0.25)
    assert groups.who("198.18.9.7", "alice@EXAMPLE.COM") == Who("people", 1.0)
    assert groups.who("127.0.0.1", "bob@EXAMPLE.COM") == Who("bob@EXAMPLE.COM", 1.0)
    assert groups.who("127.0.0.1", None) == Who("127.0.0.1", 1.0)
    assert groups.weight("ci") == 0.25 and groups.weight("127.0.0.1") == 1.0
    # A change is read within a second; a bad file keeps the groups last read.
    path.write_text('people = ["198.18.0.0/15"]\n')
    assert groups_file.groups().who("198.18.9.7", None) == Who("ci", 0.25)
    clock.now += 1.0
    assert groups_file.groups().who("198.18.9.7", None) == Who("people", 1.0)
    path.write_text("people = [")
    clock.now += 1.0
    assert groups_file.groups().who("198.18.9.7", None) == Who("people", 1.0)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("people = [", "Invalid value"),
        ('x = ["not an address"]', "neither a principal"),
        ('[x]\nmembers = ["a@R"]\nweight = 0', "above 0"),
        ('[x]\nmembers = ["a@R"]\nweight = true', "above 0"),
        ('[x]\nmembers = ["a@R"]\nbogus = 1', "unknown keys"),
        ('x = ["a@R"]\ny = ["a@R"]', "in two groups"),
        ('x = ["10.0.0.0/8"]\ny = ["10.0.0.0/8"]', "in two groups"),
        ("x = 3", "list of strings"),
    ],
)
def test_a_bad_groups_file_says_why(text: str, why: str) -> None:
    with pytest.raises(GroupsError, match=why):
        parse_groups(text)


def test_kinds_whose_bits_collide_are_told_apart_in_one_worker() -> None:
    assert kind_bit("g++") == kind_bit("clang")  # (32 bits: some kinds share one)
    fair, heavy, light = _heavy_and_light()
    fair.wait_begins(light, "clang")
    assert not fair.yields(heavy, "g++")
    assert fair.yields(heavy, "clang")


@pytest.mark.asyncio
async def test_a_job_leaves_a_free_slot_to_a_lighter_job_for_a_short_time_only() -> None:
    fair, heavy, light = _heavy_and_light()
    # The light share's job waits, but will never take this backend (it refused it,
    # say, or it waits in a worker that went away).
    fair.wait_begins(light, "gcc")
    fake = FakeClock()
    queue = SlotQueue(fake)
    free = [B("s1")]
    how = FairSourceForTests(fair, heavy, lambda: free[0] if free else None)
    job = asyncio.ensure_future(acquire(queue, how, queue.waiting(10.0)))
    await settle()
    assert not job.done()  # it left the slot to the light job ...
    await fake.advance(YIELD_MAX_S)
    assert job.done() and job.result() == B("s1")  # ... for a moment, then took it


def test_a_big_groups_file_parses_and_finds_the_longest_prefix() -> None:
    members = [f'"10.{n // 256}.{n % 256}.0/24"' for n in range(20000)]
    text = f'many = [{", ".join(members)}]\n[wide]\nmembers = ["10.0.0.0/8"]\nweight = 3\n'
    groups = parse_groups(text)
    assert groups.who("10.3.7.9", None) == Who("many", 1.0)
    assert groups.who("10.200.7.9", None) == Who("wide", 3.0)
    assert groups.who("11.0.0.1", None) == Who("11.0.0.1", 1.0)
