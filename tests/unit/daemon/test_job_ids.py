"""Job ids (daemon/admission.py): every connection's id differs from the others' of its
process, and a forked balancer worker draws its own start (a counter copied by the fork
would give two workers' jobs the same ids, and their log lines would join)."""

from __future__ import annotations

import os
import re

from daemon.admission import next_job_id


def test_job_ids_are_twelve_hex_digits_and_never_repeat_in_a_process() -> None:
    ids = [next_job_id() for _ in range(10_000)]
    assert all(re.fullmatch(r"[0-9a-f]{12}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_a_forked_process_counts_from_a_start_of_its_own() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # (the child: its next ids, to the parent)
        os.write(write, " ".join(next_job_id() for _ in range(100)).encode())
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert status == 0
    with os.fdopen(read, "rb") as pipe:
        child = set(pipe.read().decode().split())
    parent = {next_job_id() for _ in range(100)}
    assert len(child) == 100 and not child & parent
