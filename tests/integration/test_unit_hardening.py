"""Issue 33: the server unit's hardening, tried on a real sandboxed compile. No systemd
runs as PID 1 here, so the unit's mount and privilege settings are emulated from the
unit file itself (tests/support/unit_emulation.py says exactly which and how); the
seccomp-based ones are left to systemd-analyze (tests/integration/test_systemd_units.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.distcc import run_distcc
from tests.support.projects import local_object
from tests.support.servers import StartServer
from tests.support.unit_emulation import EMULATED, hardened_prefix, service_settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "configs" / "systemd" / "distlb-server.service"


def test_the_units_hardening_is_emulated_where_it_is_set() -> None:
    settings = service_settings(UNIT)
    assert {"ProtectSystem", "PrivateTmp", "ProtectProc", "ProtectControlGroups",
            "CapabilityBoundingSet", "NoNewPrivileges"} <= set(settings) & EMULATED  # fmt: skip


def test_a_sandboxed_compile_works_under_the_units_hardening(
    start_server: StartServer, server_tmp: Path, tmp_path: Path
) -> None:
    settings = service_settings(UNIT)
    server = start_server("--jobs", "1", prefix=hardened_prefix(settings, [server_tmp]))
    assert server.status()["sandbox"]["mode"] == "bwrap"

    (tmp_path / "hard.c").write_text("int hardened(int x) { return x * 7; }\n")
    result = run_distcc(["gcc", "-O2", "-c", "hard.c", "-o", "hard.o"],
                        hosts=f"127.0.0.1:{server.port}", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    local = local_object(tmp_path, tmp_path / "hard.c", "gcc", cflags="-O2")
    assert (tmp_path / "hard.o").read_bytes() == local
    assert server.counters()["ok"] == 1


@pytest.mark.parametrize("setting", ["ProtectKernelTunables", "ProtectKernelLogs"])
def test_a_setting_the_unit_leaves_out_would_break_the_sandbox(
    start_server: StartServer, server_tmp: Path, setting: str
) -> None:
    """What the unit says of these is true: with either, bwrap cannot mount a job's
    /proc, and the server's start check refuses to start (so the emulation bites)."""
    settings = service_settings(UNIT) | {setting: "yes"}
    with pytest.raises(AssertionError, match=r"exited 2.*mount proc on /newroot/proc"):
        start_server("--jobs", "1", prefix=hardened_prefix(settings, [server_tmp]))


def test_without_cap_sys_nice_the_server_refuses_to_start_and_says_why(
    start_server: StartServer, server_tmp: Path
) -> None:
    """Renicing a job's processes (another uid's) needs CAP_SYS_NICE: without it the
    jobs would silently run at the server's own niceness, so the start check refuses."""
    settings = service_settings(UNIT)
    kept = [cap for cap in settings["CapabilityBoundingSet"].split() if cap != "CAP_SYS_NICE"]
    settings["CapabilityBoundingSet"] = " ".join(kept)
    with pytest.raises(AssertionError, match=r"exited 2.*CAP_SYS_NICE"):
        start_server("--jobs", "1", prefix=hardened_prefix(settings, [server_tmp]))
    start_server("--jobs", "1", "--nice", "0", prefix=hardened_prefix(settings, [server_tmp]))
