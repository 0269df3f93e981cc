"""The makespan arithmetic: the lower bound of a run, and two reference schedulers
(no overhead, no background load) that frame every measured makespan."""

from __future__ import annotations

import bisect
import heapq
from collections import deque

from .model import Farm, Scenario


def capacity(scenario: Scenario, farm: Farm) -> float:
    """The farm's speed-slots: the sum of slots x speed."""
    return sum(scenario.slots * speed for speed in farm.speeds)


def lower_bound(scenario: Scenario, farm: Farm, background_work_s: float) -> float:
    """max((client work + background work done) / capacity, longest job at the fastest
    speed): no schedule of the run ends sooner."""
    client_work = sum(sum(works) for works in farm.job_work_s)
    longest = max(max(works) for works in farm.job_work_s) / max(farm.speeds)
    return max((client_work + background_work_s) / capacity(scenario, farm), longest)


def ideal_greedy(scenario: Scenario, farm: Farm) -> tuple[float, float]:
    """A reference, not a strategy: the makespan of a scheduler with no overhead and no
    background load that knows every speed and puts each job, when the client's ``-j``
    lets it ask, on the fastest free slot (requests served first come, first served).
    Returns (its makespan, the lower bound of that load). What is left between the two
    is the cost of the stagger, ``-j`` and the last long jobs, which no balancer avoids."""
    slot_speeds = sorted((s for s in farm.speeds for _ in range(scenario.slots)), reverse=True)
    free = list(range(len(slot_speeds)))  # indices into slot_speeds, fastest first
    next_job = [0] * scenario.clients
    events: list[tuple[float, int, int, int]] = []  # (time, order, client, slot or -1)
    order = 0
    for client, start_s in enumerate(farm.starts_s):
        for _ in range(scenario.parallel):
            events.append((start_s, order, client, -1))
            order += 1
    heapq.heapify(events)
    pending: deque[int] = deque()
    finish_s = 0.0
    while events:
        now = events[0][0]
        while events and events[0][0] == now:
            _, _, client, slot = heapq.heappop(events)
            if slot >= 0:
                bisect.insort(free, slot)
            pending.append(client)
        while pending and free:
            client = pending.popleft()
            if next_job[client] >= scenario.jobs:
                continue  # this worker of the client's make has nothing left to start
            slot = free.pop(0)
            done = now + farm.job_work_s[client][next_job[client]] / slot_speeds[slot]
            next_job[client] += 1
            finish_s = max(finish_s, done)
            heapq.heappush(events, (done, order, client, slot))
            order += 1
    work = sum(sum(works) for works in farm.job_work_s)
    longest = max(max(works) for works in farm.job_work_s) / max(farm.speeds)
    return finish_s - min(farm.starts_s), max(work / sum(slot_speeds), longest)


def ideal_earliest_finish(scenario: Scenario, farm: Farm) -> float:
    """A second reference, an oracle: it knows every job's length and when every slot
    comes free, and puts each job (when the client's ``-j`` lets it ask) on the slot
    where it would finish first, waiting for a fast slot rather than taking a slow one
    when that ends sooner. No overhead, no background load. Returns its makespan (its
    lower bound is ``ideal_greedy``'s)."""
    slot_speeds = [s for s in farm.speeds for _ in range(scenario.slots)]
    free_at = [0.0] * len(slot_speeds)
    next_job = [0] * scenario.clients
    asks = [(start_s, client) for client, start_s in enumerate(farm.starts_s)]
    asks = [ask for ask in asks for _ in range(scenario.parallel)]
    heapq.heapify(asks)
    finish_s = 0.0
    while asks:
        now, client = heapq.heappop(asks)
        if next_job[client] >= scenario.jobs:
            continue
        work = farm.job_work_s[client][next_job[client]]
        next_job[client] += 1
        done, slot = min(
            (max(now, free) + work / speed, i)
            for i, (free, speed) in enumerate(zip(free_at, slot_speeds, strict=True))
        )
        free_at[slot] = done
        finish_s = max(finish_s, done)
        heapq.heappush(asks, (done, client))
    return finish_s - min(farm.starts_s)
