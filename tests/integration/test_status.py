"""Status over HTTP (JSON, Prometheus, distccd --stats text), HAProxy's agent-check, lsdistcc."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from pathlib import Path

import pytest

from client import compile_remote
from client.status import ReportError, ServerReport, fetch_report
from daemon.bounds import REFUSAL_LOG_BURST
from tests.support.distcc import run_distcc
from tests.support.servers import ServerProcess, StartServer
from wire import Request

pytestmark = pytest.mark.integration

DISTCCD_FIELDS = [
    "dcc_tcp_accept", "dcc_rej_bad_req", "dcc_rej_overload", "dcc_compile_ok",
    "dcc_compile_error", "dcc_compile_timeout", "dcc_cli_disconnect", "dcc_other",
    "dcc_longest_job", "dcc_longest_job_compiler", "dcc_longest_job_time_msecs", "dcc_max_kids",
    "dcc_avg_kids1", "dcc_avg_kids2", "dcc_avg_kids3", "dcc_current_load", "dcc_load1",
    "dcc_load2", "dcc_load3", "dcc_num_compiles1", "dcc_num_compiles2", "dcc_num_compiles3",
    "dcc_num_procstate_D", "dcc_max_RSS", "dcc_max_RSS_name", "dcc_io_rate", "dcc_free_space",
    "dcc_free_mem",
]  # fmt: skip


def _compile_one(server: ServerProcess, tmp_path: Path, source: str = "int x = 1;\n") -> None:
    (tmp_path / "one.c").write_text(source)
    result = run_distcc(["gcc", "-c", "one.c", "-o", "one.o"], hosts=f"127.0.0.1:{server.port}",
                        cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_status_json_reports_slots_counters_and_compilers(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server("--jobs", "3", "--compiler", "gcc", "--compiler", "x86_64-linux-gnu-gcc")
    _compile_one(server, tmp_path)
    status = server.status()
    assert (status["slots"], status["busy"], status["free"], status["accepting"]) == (3, 0, 3, True)
    assert set(status["counters"]) >= {
        "accepted", "ok", "compile_error", "rejected_busy", "rejected_policy", "timeout",
        "client_disconnect", "bad_request",
    }  # fmt: skip
    assert status["counters"]["ok"] == status["counters"]["accepted"] == 1
    assert set(status["compilers"]) == {"gcc", "x86_64-linux-gnu-gcc"}
    gcc_version = subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout
    assert status["compilers"]["gcc"]["version"] == gcc_version.splitlines()[0]
    assert status["uptime_s"] > 0 and status["version"]


def test_compile_errors_are_replied_and_counted(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server("--jobs", "1")
    (tmp_path / "bad.c").write_text("int f(void) { return undeclared; }\n")
    result = run_distcc(["gcc", "-c", "bad.c", "-o", "bad.o"], hosts=f"127.0.0.1:{server.port}",
                        cwd=tmp_path, extra_env={"DISTCC_SKIP_LOCAL_RETRY": "1"})  # fmt: skip
    assert result.returncode != 0
    assert "undeclared" in result.stderr
    assert server.counters()["compile_error"] == 1


def test_distccd_stats_page_has_distccd_fields_in_order(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server("--jobs", "2")
    _compile_one(server, tmp_path)
    text = server.http("/")
    lines = text.splitlines()
    assert lines[0] == "argv /distccd" and lines[1] == "<distccstats>"
    assert lines[-1] == "</distccstats>"
    names = [line.split(" ", 1)[0] for line in lines[2:-1]]
    assert names == DISTCCD_FIELDS
    values = dict(line.split(" ", 1) for line in lines[2:-1])
    assert values["dcc_max_kids"] == "2"
    assert values["dcc_compile_ok"] == "1"
    assert values["dcc_tcp_accept"] == "1"
    assert values["dcc_num_compiles1"] == "1"


def test_a_job_name_neither_forges_nor_breaks_the_distccd_page(start_server: StartServer) -> None:
    """The trust review (finding 5): the input's name went verbatim into
    dcc_longest_job, so a newline forged lines, and a byte that is not UTF-8 made the
    page answer 500 until a longer job came. (The first job to end well is the longest
    so far, whatever its time.)"""
    server = start_server("--jobs", "1")
    name = b"x\ndcc_max_kids 9999\n\xff.c".decode("utf-8", "surrogateescape")
    request = Request(1, ("gcc", "-c", name, "-o", "x.o"), b"int x;\n")

    reply = asyncio.run(compile_remote("127.0.0.1", server.port, request))
    assert reply.status == 0, reply.stderr

    lines = server.http("/").splitlines()
    assert [line.split(" ", 1)[0] for line in lines[2:-1]] == DISTCCD_FIELDS
    assert r"dcc_longest_job x\x0adcc_max_kids 9999\x0a\xff.c" in lines
    assert "dcc_max_kids 1" in lines


def test_prometheus_metrics(start_server: StartServer, tmp_path: Path) -> None:
    server = start_server("--jobs", "2")
    _compile_one(server, tmp_path)
    metrics = server.http("/metrics")
    assert "distlb_server_slots 2.0" in metrics
    assert 'distlb_server_jobs_total{outcome="ok"} 1.0' in metrics
    assert 'distlb_server_job_seconds_count{outcome="ok"} 1.0' in metrics


def test_agent_check_reports_free_slots(
    start_server: StartServer, fake_compilers: tuple[Path, Path]
) -> None:
    from tests.support.servers import hold_a_slot

    bin_dir, _ = fake_compilers
    server = start_server("--jobs", "4", "--agent-port", "0", "--compiler", "hang-cc",
                          path_prepend=str(bin_dir))  # fmt: skip
    assert server.agent_port
    with socket.create_connection(("127.0.0.1", server.agent_port)) as conn:
        conn.settimeout(10)
        line = conn.makefile("rb").readline()
    assert line == b"up 100% maxconn:4\n"
    with hold_a_slot(server.port):  # takes one slot
        from tests.support.servers import wait_until

        wait_until(lambda: server.status()["busy"] == 1, 10, "one slot busy")
        with socket.create_connection(("127.0.0.1", server.agent_port)) as conn:
            conn.settimeout(10)
            assert conn.makefile("rb").readline() == b"up 75% maxconn:4\n"


def test_agent_check_answers_only_allowed_addresses(start_server: StartServer) -> None:
    """The agent port says how busy the server is: only to --allow, as the distcc port
    (it answered everyone)."""
    server = start_server("--jobs", "4", "--agent-port", "0", "--allow", "127.0.0.1/32")
    assert server.agent_port
    with socket.socket() as outsider:
        outsider.bind(("127.0.0.2", 0))
        outsider.settimeout(10)
        outsider.connect(("127.0.0.1", server.agent_port))
        assert outsider.makefile("rb").readline() == b""  # closed, unanswered
    assert server.logged("agent_refused")["client"] == "127.0.0.2"
    with socket.create_connection(("127.0.0.1", server.agent_port)) as conn:
        conn.settimeout(10)
        assert conn.makefile("rb").readline() == b"up 100% maxconn:4\n"


def test_lsdistcc_compile_probe_lists_server_as_up(start_server: StartServer) -> None:
    server = start_server("--jobs", "1")
    # 127.0.0.2 has nothing on the port: lsdistcc must list only our server.
    result = subprocess.run(
        ["timeout", "60", "lsdistcc", f"-r{server.port}", "-pgcc", "-k5000", "127.0.0.1",
         "127.0.0.2"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.stdout.split() == [f"127.0.0.1:{server.port}"], result
    assert server.counters()["ok"] == 1


def test_a_status_port_that_times_out_says_so() -> None:
    # A listener that accepts (the kernel does) and never answers.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        try:
            asyncio.run(fetch_report("127.0.0.1", port, "distlb", 0.2))
        except ReportError as exc:
            assert str(exc) == "status port: TimeoutError"
        else:
            raise AssertionError("a silent status port gave a report")


def test_status_pages_answer_only_status_allow(start_server: StartServer) -> None:
    """They name compilers, paths and the file being compiled: anyone else is closed as
    soon as the connection is accepted, unanswered and unread."""
    server = start_server("--status-allow", "10.0.0.0/8")
    for path in ("/status", "/metrics", "/"):
        with socket.create_connection(("127.0.0.1", server.stats_port)) as conn:
            conn.settimeout(10)
            with contextlib.suppress(ConnectionError):  # (a reset: our bytes went unread)
                conn.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
            try:
                answer = conn.recv(1024)
            except ConnectionResetError:
                answer = b""
            assert answer == b"", path
    refused = server.logged("http_refused")
    assert refused["client"] == "127.0.0.1" and refused["reason"] == "address not allowed"
    assert not server.events("status_refused")  # (the page's own check never saw them)


def test_a_report_request_with_a_change_token_is_answered_once_a_slot_is_taken(
    start_server: StartServer, fake_compilers: tuple[Path, Path]
) -> None:
    """The long poll: ``/status?since=TOKEN&wait=S`` waits while nothing changed enough
    (one slot of two is enough) and answers when a job takes a slot; a report asked with
    the current token and a short wait comes back unchanged; a bad token is answered at
    once."""
    from client import compile_remote
    from wire import Request

    bin_dir, _ = fake_compilers
    server = start_server("--jobs", "2", "--compiler", "slow-cc", "--compiler", "gcc",
                          path_prepend=str(bin_dir))  # fmt: skip

    async def scenario() -> tuple[ServerReport, ServerReport, ServerReport, ServerReport]:
        first = await fetch_report("127.0.0.1", server.stats_port, "distlb", 10)
        assert first.busy == 0 and first.change
        unchanged = await fetch_report(
            "127.0.0.1", server.stats_port, "distlb", 10, first.change, 0.2
        )
        held = asyncio.create_task(
            fetch_report("127.0.0.1", server.stats_port, "distlb", 60, first.change, 30)
        )
        await asyncio.sleep(0)
        job = asyncio.create_task(compile_remote(
            "127.0.0.1", server.port, Request(1, ("slow-cc", "-c", "s.c"), b"int s;\n"),
            timeout_s=60,
        ))  # fmt: skip
        answer = await held
        bad = await fetch_report("127.0.0.1", server.stats_port, "distlb", 10, "zz", 30)
        await job
        return first, unchanged, answer, bad

    first, unchanged, answer, bad = asyncio.run(scenario())
    assert unchanged.change == first.change
    assert answer.busy == 1 and answer.change != first.change
    assert bad.busy == 1


def test_report_requests_held_at_once_are_capped(start_server: StartServer) -> None:
    """At most MAX_HELD_REPORTS long polls are held; the rest are answered at once (so
    many idle pollers cannot pin a server's connections). A draining server answers the
    held ones too."""
    from server.http_status import MAX_HELD_REPORTS

    # (all from one address: its own cap, --max-http-connections-per-address, is lifted)
    server = start_server("--jobs", "2", "--max-http-connections-per-address", "1024")
    extra = 12

    async def scenario() -> tuple[int, int]:
        first = await fetch_report("127.0.0.1", server.stats_port, "distlb", 10)
        polls = [
            asyncio.ensure_future(
                fetch_report("127.0.0.1", server.stats_port, "distlb", 60, first.change, 30)
            )
            for _ in range(MAX_HELD_REPORTS + extra)
        ]
        # Nothing changes: only the requests beyond the cap can be answered now.
        deadline = asyncio.get_running_loop().time() + 20
        while sum(p.done() for p in polls) < extra:
            assert asyncio.get_running_loop().time() < deadline, "no poll beyond the cap came back"
            await asyncio.sleep(0.05)
        answered_early = sum(p.done() for p in polls)
        await asyncio.to_thread(server.stop)  # draining: the held ones are answered
        results = await asyncio.gather(*polls, return_exceptions=True)
        return answered_early, sum(1 for r in results if not isinstance(r, BaseException))

    early, ok = asyncio.run(scenario())
    assert early == extra
    assert ok == MAX_HELD_REPORTS + extra


FLOOD = 300


@pytest.mark.parametrize("port", ["agent", "compile"])
def test_a_flood_of_refused_connections_is_logged_within_the_refusal_budget(
    start_server: StartServer, port: str
) -> None:
    """Refusals of addresses outside --allow are logged a burst at a time and then once
    a second, each line saying how many it left out (a review's connect-and-close loop
    from an outsider wrote 0.45 MB of log a second, a line a connection)."""
    server = start_server("--jobs", "2", "--agent-port", "0", "--allow", "127.0.0.1/32")
    target = server.agent_port if port == "agent" else server.port
    event = "agent_refused" if port == "agent" else "turned_away"
    started = time.monotonic()
    for _ in range(FLOOD):
        with socket.socket() as outsider:
            outsider.bind(("127.0.0.2", 0))
            outsider.settimeout(10)
            outsider.connect(("127.0.0.1", target))
            outsider.recv(1)  # (closed, unanswered)
    elapsed = time.monotonic() - started
    # Each refusal was made (the connection closed) before the next connect; a job's
    # line comes after all of their lines: once it is read, so are they.
    job = Request(1, ("gcc", "-c", "f.c", "-o", "f.o"), b"int f;\n")
    assert asyncio.run(compile_remote("127.0.0.1", server.port, job, timeout_s=60)).status == 0
    server.logged("job_done")
    lines = server.events(event)
    assert len(lines) <= REFUSAL_LOG_BURST + elapsed + 12, len(lines)
    assert all(e["client"] == "127.0.0.2" for e in lines)
