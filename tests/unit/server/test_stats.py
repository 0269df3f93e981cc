"""What the server counts, shown as distccd's --stats page, Prometheus text and JSON."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from server.slots import Slots
from server.stats import ServerStats

DISTCCD_FIELDS = [
    "dcc_tcp_accept",
    "dcc_rej_bad_req",
    "dcc_rej_overload",
    "dcc_compile_ok",
    "dcc_compile_error",
    "dcc_compile_timeout",
    "dcc_cli_disconnect",
    "dcc_other",
    "dcc_longest_job",
    "dcc_longest_job_compiler",
    "dcc_longest_job_time_msecs",
    "dcc_max_kids",
    "dcc_avg_kids1",
    "dcc_avg_kids2",
    "dcc_avg_kids3",
    "dcc_current_load",
    "dcc_load1",
    "dcc_load2",
    "dcc_load3",
    "dcc_num_compiles1",
    "dcc_num_compiles2",
    "dcc_num_compiles3",
    "dcc_num_procstate_D",
    "dcc_max_RSS",
    "dcc_max_RSS_name",
    "dcc_io_rate",
    "dcc_free_space",
    "dcc_free_mem",
]
INTEGER_FIELDS = set(DISTCCD_FIELDS) - {
    "dcc_longest_job",
    "dcc_longest_job_compiler",
    "dcc_max_RSS_name",
    "dcc_load1",
    "dcc_load2",
    "dcc_load3",
    "dcc_free_space",
    "dcc_free_mem",
}


@pytest.fixture
def stats(tmp_path: Path) -> ServerStats:
    return ServerStats(slots=Slots(4), tmp_dir=str(tmp_path))


def fields(stats: ServerStats) -> dict[str, str]:
    lines = stats.distccd_text().splitlines()
    body = lines[lines.index("<distccstats>") + 1 : lines.index("</distccstats>")]
    return dict(line.split(" ", 1) for line in body)


def field_names(stats: ServerStats) -> list[str]:
    lines = stats.distccd_text().splitlines()
    body = lines[lines.index("<distccstats>") + 1 : lines.index("</distccstats>")]
    return [line.split(" ", 1)[0] for line in body]


# --- the distccd --stats page ---------------------------------------------------------


def test_distccd_page_has_exactly_distccds_fields_in_distccds_order(stats: ServerStats) -> None:
    assert field_names(stats) == DISTCCD_FIELDS


def test_distccd_page_is_framed_as_distccd_frames_it(stats: ServerStats) -> None:
    text = stats.distccd_text()
    lines = text.splitlines()

    assert lines[0] == "argv /distccd"
    assert lines[1] == "<distccstats>"
    assert lines[-1] == "</distccstats>"
    assert text.endswith("</distccstats>\n")


def test_every_field_has_a_value_of_distccds_format(stats: ServerStats) -> None:
    values = fields(stats)

    for name in INTEGER_FIELDS:
        assert re.fullmatch(r"-?\d+", values[name]), (name, values[name])
    for name in ("dcc_load1", "dcc_load2", "dcc_load3"):
        assert re.fullmatch(r"\d+\.\d\d", values[name]), (name, values[name])
    assert re.fullmatch(r"\d+ MB", values["dcc_free_space"])
    assert re.fullmatch(r"\d+ MB", values["dcc_free_mem"])


def test_fresh_server_reports_no_longest_job_as_distccd_does(stats: ServerStats) -> None:
    values = fields(stats)

    assert values["dcc_longest_job"] == "none"
    assert values["dcc_longest_job_compiler"] == "none"
    assert values["dcc_longest_job_time_msecs"] == "-1"


def test_counters_map_onto_distccds_fields(stats: ServerStats) -> None:
    counters = stats.counters
    counters.connections = 20
    counters.bad_request = 1
    counters.rejected_policy = 2
    counters.rejected_access = 4
    counters.rejected_busy = 3
    counters.ok = 5
    counters.compile_error = 6
    counters.timeout = 7
    counters.client_disconnect = 8
    counters.other = 9

    values = fields(stats)

    assert values["dcc_tcp_accept"] == "20"
    # distccd has one "bad request" bucket for every refusal that is not overload.
    assert values["dcc_rej_bad_req"] == "7"
    assert values["dcc_rej_overload"] == "3"
    assert values["dcc_compile_ok"] == "5"
    assert values["dcc_compile_error"] == "6"
    assert values["dcc_compile_timeout"] == "7"
    assert values["dcc_cli_disconnect"] == "8"
    assert values["dcc_other"] == "9"


def test_slots_show_as_max_kids_and_current_load(stats: ServerStats) -> None:
    assert stats.slots.try_acquire()
    assert stats.slots.try_acquire()

    values = fields(stats)

    assert values["dcc_max_kids"] == "4"
    assert values["dcc_current_load"] == "2"


# --- counting jobs ---------------------------------------------------------------------


def test_finished_job_is_counted_under_its_outcome(stats: ServerStats) -> None:
    stats.job_finished("ok", "a.c", "gcc", 0.1)
    stats.job_finished("ok", "b.c", "gcc", 0.1)
    stats.job_finished("compile_error", "c.c", "gcc", 0.1)
    stats.job_finished("timeout", "d.c", "gcc", 0.1)

    assert (stats.counters.ok, stats.counters.compile_error, stats.counters.timeout) == (2, 1, 1)


def test_longest_successful_job_is_remembered(stats: ServerStats) -> None:
    stats.job_finished("ok", "small.c", "gcc", 0.25)
    stats.job_finished("ok", "huge.cc", "g++", 2.5)
    stats.job_finished("ok", "medium.c", "clang", 1.0)

    values = fields(stats)

    assert values["dcc_longest_job"] == "huge.cc"
    assert values["dcc_longest_job_compiler"] == "g++"
    assert values["dcc_longest_job_time_msecs"] == "2500"


def test_failed_jobs_never_become_the_longest_job(stats: ServerStats) -> None:
    stats.job_finished("ok", "fine.c", "gcc", 0.5)
    stats.job_finished("compile_error", "broken.c", "gcc", 9.0)
    stats.job_finished("timeout", "stuck.c", "gcc", 1200.0)

    assert fields(stats)["dcc_longest_job"] == "fine.c"


def test_a_job_name_cannot_forge_lines_of_the_distccd_page(stats: ServerStats) -> None:
    """The input's name is the client's (the trust review, finding 5): a newline in it
    wrote lines of the page's own."""
    stats.job_finished("ok", "x\ndcc_max_kids 9999\r\ndcc_current_load 0\n.c", "gcc", 9.0)

    assert field_names(stats) == DISTCCD_FIELDS
    escaped = r"x\x0adcc_max_kids 9999\x0d\x0adcc_current_load 0\x0a.c"
    assert fields(stats)["dcc_longest_job"] == escaped
    assert fields(stats)["dcc_max_kids"] == "4"


def test_a_job_name_that_is_not_utf8_keeps_the_distccd_page_up(stats: ServerStats) -> None:
    """A name's bytes that are not UTF-8 come as surrogates (argv is decoded with
    surrogateescape): the page could not be encoded, and answered 500 until a longer
    job came (the trust review, finding 5)."""
    name = b"caf\xe9-\xff\\x.c".decode("utf-8", "surrogateescape")
    stats.job_finished("ok", name, "gcc", 9.0)

    page = stats.distccd_text().encode("utf-8")  # (what the HTTP face sends)
    assert b"dcc_longest_job caf\\xe9-\\xff\\x5cx.c\n" in page


def test_a_long_job_name_is_cut_on_the_distccd_page(stats: ServerStats) -> None:
    stats.job_finished("ok", "a" * 100_000 + ".c", "gcc", 9.0)

    assert len(fields(stats)["dcc_longest_job"]) <= 1024


def test_compiles_count_finished_compiles_but_not_timeouts(stats: ServerStats) -> None:
    stats.job_finished("ok", "a.c", "gcc", 0.1)
    stats.job_finished("compile_error", "b.c", "gcc", 0.1)
    stats.job_finished("ok", "c.c", "gcc", 0.1)
    stats.job_finished("timeout", "d.c", "gcc", 0.1)
    stats.job_finished("client_disconnect", "e.c", "gcc", 0.1)

    assert stats.compiles_in_last(15) == 3
    assert fields(stats)["dcc_num_compiles3"] == "3"


def test_load_average_of_busy_slots_moves_towards_the_busy_count(stats: ServerStats) -> None:
    assert stats.slots.try_acquire()
    assert stats.slots.try_acquire()

    stats.sample_load(60.0)

    assert stats.busy_avg[0] == pytest.approx(2.0)
    assert stats.busy_avg[1] == pytest.approx(2.0 * 60 / 300)
    assert stats.busy_avg[2] == pytest.approx(2.0 * 60 / 900)
    values = fields(stats)
    assert (values["dcc_avg_kids1"], values["dcc_avg_kids2"], values["dcc_avg_kids3"]) == (
        "2",
        "0",
        "0",
    )


def test_load_average_decays_when_slots_free_up(stats: ServerStats) -> None:
    assert stats.slots.try_acquire()
    stats.sample_load(60.0)
    stats.slots.release()

    stats.sample_load(30.0)

    assert stats.busy_avg[0] == pytest.approx(0.5)


# --- Prometheus and JSON -------------------------------------------------------------------


def test_prometheus_exports_counters_slots_and_job_times(stats: ServerStats) -> None:
    stats.counters.connections = 3
    assert stats.slots.try_acquire()
    stats.job_finished("ok", "a.c", "gcc", 0.2)
    stats.job_finished("rejected_policy", "b.c", "gcc", 0.0)

    text = stats.prometheus().decode()

    assert 'distlb_server_jobs_total{outcome="ok"} 1.0' in text
    assert 'distlb_server_jobs_total{outcome="rejected_policy"} 1.0' in text
    assert 'distlb_server_jobs_total{outcome="timeout"} 0.0' in text
    assert "distlb_server_connections_total 3.0" in text
    assert "distlb_server_slots 4.0" in text
    assert "distlb_server_slots_busy 1.0" in text
    assert "distlb_server_slots_free 3.0" in text
    assert "distlb_server_accepting 1.0" in text
    assert 'distlb_server_job_seconds_count{outcome="ok"} 1.0' in text
    assert 'distlb_server_job_seconds_bucket{le="0.25",outcome="ok"} 1.0' in text


def test_connections_are_not_an_outcome(stats: ServerStats) -> None:
    assert 'outcome="connections"' not in stats.prometheus().decode()


def test_draining_server_exports_not_accepting(stats: ServerStats) -> None:
    stats.slots.accepting = False

    text = stats.prometheus().decode()

    assert "distlb_server_accepting 0.0" in text
    assert "distlb_server_slots_free 0.0" in text


def test_two_servers_in_one_process_keep_separate_metrics(tmp_path: Path) -> None:
    first = ServerStats(slots=Slots(1), tmp_dir=str(tmp_path))
    second = ServerStats(slots=Slots(2), tmp_dir=str(tmp_path))

    first.job_finished("ok", "a.c", "gcc", 0.1)

    assert 'distlb_server_jobs_total{outcome="ok"} 1.0' in first.prometheus().decode()
    assert 'distlb_server_jobs_total{outcome="ok"} 0.0' in second.prometheus().decode()


def test_status_reports_slots_counters_and_compilers(stats: ServerStats) -> None:
    assert stats.slots.try_acquire()
    stats.job_finished("ok", "a.c", "gcc", 0.1)
    compilers = {"gcc": {"path": "/usr/bin/gcc", "version": "12"}}

    status = stats.status(compilers, "0.1.0")

    assert status["slots"] == 4
    assert status["busy"] == 1
    assert status["free"] == 3
    assert status["accepting"] is True
    assert status["compilers"] == compilers
    assert status["version"] == "0.1.0"
    counters = status["counters"]
    assert isinstance(counters, dict)
    assert counters["ok"] == 1


def test_accepted_is_counted_apart_from_the_outcomes(stats: ServerStats) -> None:
    stats.counters.accepted = 2
    stats.job_finished("ok", "a.c", "gcc", 0.1)
    stats.job_finished("compile_error", "b.c", "gcc", 0.1)

    text = stats.prometheus().decode()

    assert 'outcome="accepted"' not in text
    assert "distlb_server_jobs_accepted_total 2.0" in text


def test_a_probe_is_counted_as_a_probe_and_not_as_a_job(stats: ServerStats) -> None:
    stats.job_finished("ok", "distlb-probe.c", "gcc", 0.1, probe=True)
    stats.job_finished("ok", "distlb-probe.c", "gcc", 0.1, probe=True)
    stats.job_finished("rejected_policy", "?", "cc", 0.0, probe=True)

    text = stats.prometheus().decode()

    assert 'distlb_server_probes_total{outcome="ok"} 2.0' in text
    assert 'distlb_server_probes_total{outcome="rejected_policy"} 1.0' in text
    assert 'distlb_server_probes_total{outcome="timeout"} 0.0' in text
    assert 'distlb_server_jobs_total{outcome="ok"} 0.0' in text
    assert 'distlb_server_job_seconds_count{outcome="ok"}' not in text
    assert fields(stats)["dcc_longest_job"] == "none"
    assert stats.compiles_in_last(15) == 0
    assert stats.status({}, "1")["probes"] == {**stats.probes, "ok": 2}


def test_the_disk_caches_counts_are_exported_when_there_is_one(tmp_path: Path) -> None:
    from cache import CacheStats

    cache = CacheStats(hits=5, misses=3, corrupt=1, rejected=2, stores=3)
    stats = ServerStats(slots=Slots(1), tmp_dir=str(tmp_path), cache_stats=cache)

    text = stats.prometheus().decode()

    for line in ("distlb_server_cache_hits_total 5.0", "distlb_server_cache_misses_total 3.0",
                 "distlb_server_cache_corrupt_total 1.0", "distlb_server_cache_rejected_total 2.0",
                 "distlb_server_cache_stores_total 3.0"):  # fmt: skip
        assert line in text
    assert "distlb_server_cache_" not in ServerStats(Slots(1), str(tmp_path)).prometheus().decode()


def test_build_info_names_the_version_and_the_role(stats: ServerStats) -> None:
    stats.version = "9.8.7"

    text = stats.prometheus().decode()

    assert 'distlb_build_info{role="server",version="9.8.7"} 1.0' in text


def _sample(text: str, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    values = [s.value for f in text_string_to_metric_families(text) for s in f.samples
              if s.name == name]  # fmt: skip
    assert len(values) == 1, (name, values)
    return float(values[0])


def test_the_start_is_a_successful_load_and_reloads_are_reported(stats: ServerStats) -> None:
    text = stats.prometheus().decode()
    assert "distlb_config_last_reload_successful 1.0" in text
    started = stats.reload.last_success_at
    stamp = "distlb_config_last_reload_success_timestamp_seconds"
    assert _sample(text, stamp) == pytest.approx(started) and started > 1e9

    stats.reload_failed("line 3: unknown key 'jbos'")

    text = stats.prometheus().decode()
    assert "distlb_config_last_reload_successful 0.0" in text
    assert _sample(text, stamp) == pytest.approx(started)
    reload = stats.status({}, "1")["reload"]
    assert isinstance(reload, dict)
    assert reload["successful"] is False and reload["reason"] == "line 3: unknown key 'jbos'"
    assert reload["last_attempt_at"] >= reload["last_success_at"]

    stats.reload_succeeded()

    assert "distlb_config_last_reload_successful 1.0" in stats.prometheus().decode()
    assert stats.reload.last_success_at >= started and stats.reload.reason == ""
