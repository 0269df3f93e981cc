"""The farm's processes: sim-cc, distlb-servers and HAProxy, started with
bench/harness.py (each in its own session, logs in the work dir) and waited for; the
balancers are harness.start_balancer's, with daemon_env()."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bench import harness
from bench.harness import HOST, Proc, free_ports, start, wait_ready

from . import ROOT
from .model import BYTES_PER_S, Farm, Scenario

DISTLB_SERVER = ROOT / ".venv" / "bin" / "distlb-server"


# sim-cc: distcc runs `sim-cc -E file.c` locally (stdout is the "preprocessed" source)
# and `sim-cc -c file.c -o file.o` remotely or, on fallback, locally. The server runs it
# with only PATH and LANG, as an unprivileged user: no reliance on anything else.
SIM_CC = """#!/bin/sh
# sim-cc: sleeps in proportion to its input, at the speed in sim-cc.env beside it. One
# script for every server (a machine's speed is not its compiler: the balancer groups
# servers by their compiler's digest, and would see eight compilers otherwise).
. "$(dirname "$0")/sim-cc.env"
mode= ; in= ; out=
while [ $# -gt 0 ]; do
    case "$1" in
        --version) echo "sim-cc (farm simulation) 1"; exit 0 ;;
        -E) mode=E ;;
        -c) mode=c ;;
        -o) shift; out="$1" ;;
        -*) ;;
        *) in="$1" ;;
    esac
    shift
done
if [ "$mode" = E ]; then exec cat "$in"; fi
if [ "$mode" != c ] || [ -z "$in" ] || [ -z "$out" ]; then
    echo "sim-cc: want -E FILE or -c FILE -o OUT" >&2; exit 2
fi
size=$(wc -c < "$in") || exit 1
ms=$(( size * 1000 / bytes_per_speed_s ))
sleep "$(( ms / 1000 )).$(printf '%03d' $(( ms % 1000 )))"
printf 'SIMOBJ %s %s\\n' "$size" "$where" > "$out"
"""

SIM_CC_ENV = """# speed {speed:.2f}: {per_kb_ms:.2f} ms per 1000 input bytes
bytes_per_speed_s={bytes_per_speed_s}
where={where}
"""

HAPROXY_CFG = """global
    maxconn 4096

defaults
    mode tcp
    timeout connect 1s
    timeout client 300s
    timeout server 300s
    timeout queue 60s

frontend distcc
    bind {host}:{port}
    default_backend farm

backend farm
    balance leastconn
{servers}
"""


def write_sim_cc(bin_dir: Path, speed: float, where: str) -> None:
    """``bin_dir/sim-cc`` at ``speed``; its objects name ``where`` they were compiled."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    bin_dir.chmod(0o755)
    script = bin_dir / "sim-cc"
    script.write_text(SIM_CC)
    script.chmod(0o755)
    (bin_dir / "sim-cc.env").write_text(
        SIM_CC_ENV.format(
            speed=speed,
            where=where,
            per_kb_ms=1_000_000 / BYTES_PER_S / speed,
            bytes_per_speed_s=round(BYTES_PER_S * speed),
        )
    )
    (bin_dir / "sim-cc.env").chmod(0o644)


def daemon_env() -> dict[str, str]:
    """The environment of the distlb daemons: ours, plus the working tree on the module
    path, so that packages added since the venv's editable install (whose finder lists
    packages by name) are found."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "LANG": "C.UTF-8"}


@dataclass(frozen=True)
class Server:
    proc: Proc
    port: int
    stats_port: int
    agent_port: int
    speed: float


def start_servers(
    work: Path, scenario: Scenario, farm: Farm, procs: list[Proc], tag: str
) -> list[Server]:
    """One distlb-server per speed, each with its own sim-cc first on its PATH."""
    servers = []
    # All at once: ports picked one server at a time could repeat before anyone binds.
    ports = free_ports(3 * len(farm.speeds))
    for index, speed in enumerate(farm.speeds):
        bin_dir = work / f"server{index}-bin"
        write_sim_cc(bin_dir, speed, f"server{index}")
        tmp = work / f"{tag}-server{index}-tmp"
        tmp.mkdir()
        tmp.chmod(0o755)  # as root, compilers run unprivileged and must reach job dirs
        port, stats_port, agent_port = ports[3 * index : 3 * index + 3]
        command = [str(DISTLB_SERVER), "--listen", HOST, "--port", str(port)]
        command += ["--stats-port", str(stats_port), "--agent-port", str(agent_port)]
        command += ["--jobs", str(scenario.slots), "--compiler", "sim-cc", "--compiler", "gcc"]
        command += ["--log-format", "json", "--tmp-dir", str(tmp), "--offer-by-load", "off"]
        command += scenario.server_args
        env = {**daemon_env(), "PATH": f"{bin_dir}:{os.environ.get('PATH', os.defpath)}"}
        proc = start(f"{tag}-server{index}", command, work, procs, env)
        servers.append(Server(proc, port, stats_port, agent_port, speed))
    for server in servers:
        wait_ready(server.proc, server.port)
        wait_ready(server.proc, server.stats_port)
        wait_ready(server.proc, server.agent_port)
    return servers


def start_haproxy(
    work: Path, servers: list[Server], slots: int, agent: bool, procs: list[Proc], tag: str
) -> int:
    lines = []
    for i, s in enumerate(servers):
        line = f"    server s{i} {HOST}:{s.port} maxconn {slots}"
        if agent:
            # The regular check connects to the agent port too: a bare TCP connect to
            # the distcc port would count as a bad request on the server.
            line += (
                f" check port {s.agent_port} inter 1s agent-check agent-port {s.agent_port}"
                " agent-inter 500ms weight 100"
            )
        lines.append(line)
    return harness.start_haproxy(work, procs, f"{tag}-haproxy", HAPROXY_CFG, lines)
