"""Which requests are a health probe's (client/prober.py): a server counts those apart
from jobs and logs them at debug."""

from __future__ import annotations

from client.prober import PROBE_SOURCE, is_probe, probe_request
from wire import Request


def test_a_probe_is_recognised_for_any_compiler_and_protocol() -> None:
    assert is_probe(probe_request("gcc"))
    assert is_probe(probe_request("x86_64-linux-gnu-gcc-12", protocol=3))


def test_a_job_that_differs_in_its_command_line_or_source_is_no_probe() -> None:
    argv = probe_request("gcc").argv
    assert not is_probe(Request(1, argv, PROBE_SOURCE + b"\n"))
    assert not is_probe(Request(1, (*argv, "-O2"), PROBE_SOURCE))
    assert not is_probe(Request(1, ("gcc", "-c", "job.c", "-o", "job.o"), PROBE_SOURCE))
