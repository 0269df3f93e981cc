"""Allowlisted stand-in compilers for tests (shell scripts, named for what they fake).

They run in the server's sandbox, which shows them their own directory read-only and
nothing else of the test's: so tests find them running by their command lines (from
outside, /proc shows every process, whatever pid namespace it is in), not by files
they write.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.servers import process_table

# Preprocesses like gcc (the real client runs `-E` locally), then never finishes a
# compile: the stand-in for gcc spinning on bad input. It records its process group
# (the shell is the group leader) and starts a child, so tests can see the whole
# group die.
_HANG = """#!/bin/sh
for arg in "$@"; do
    case "$arg" in -E|--version) exec gcc "$@";; esac
done
sleep 3600 &
while :; do sleep 0.1; done
"""

# A compiler that takes a while, then compiles for real (for shutdown draining). How
# long is in slow-cc.seconds beside it: the script is the same everywhere, so servers
# that differ only in speed run the same compiler (a balancer groups them by its digest).
_SLOW = """#!/bin/sh
for arg in "$@"; do
    case "$arg" in -E|--version) exec gcc "$@";; esac
done
sleep "$(cat "$(dirname "$0")/slow-cc.seconds")"
exec gcc "$@"
"""


# Holds each compile until the test opens the gate (a file gate-cc.open beside it; the
# sandbox shows the stand-in's directory, so it sees the file appear), then compiles
# for real: a build whose jobs are in flight for as long as a test looks at them.
_GATE_WAIT = """#!/bin/sh
for arg in "$@"; do
    case "$arg" in -E|--version) exec gcc "$@";; esac
done
i=0
while [ ! -e "$(dirname "$0")/gate-cc.open" ] && [ $i -lt 2400 ]; do sleep 0.05; i=$((i+1)); done
"""
_GATE = _GATE_WAIT + 'exec gcc "$@"\n'

# gate-cc that leaves a child behind: it waits for the same gate, starts a process that
# would outlive it, then compiles for real (the sandbox's pid namespace ends the child).
_LINGER = _GATE_WAIT + 'sleep 3600 </dev/null >/dev/null 2>&1 &\nexec gcc "$@"\n'

# Says who it runs as (uid, groups, niceness, pid, session) and its arguments (each
# followed by "|") on stderr, then compiles.
_WHOAMI = """#!/bin/sh
for arg in "$@"; do
    case "$arg" in -E|--version) exec gcc "$@";; esac
done
nice=$(cut -d' ' -f19 /proc/$$/stat)
echo "whoami: $(id -u) | $(id -G) | $nice | $$ | $(ps -o sid= -p $$)" >&2
printf 'argv: ' >&2; printf '%s|' "$@" >&2; echo >&2
exec gcc "$@"
"""

# A stand-in for a compiler that has been subverted: it does what the first line of
# its source says (the rest is compiled for real, so a contained job still succeeds
# unless the action is its output), then compiles.
_EVIL = """#!/bin/sh
src= out= prev=
for arg in "$@"; do
    case "$arg" in -E|--version) exec gcc "$@";; esac
    case "$arg" in *.i|*.ii) src=$arg;; esac
    [ "$prev" = -o ] && out=$arg
    prev=$arg
done
action=$(head -n 1 "$src" | sed -e 's,^/[*] *,,' -e 's, *[*]/$,,')
set -- "$@"
case "$action" in
    "read "*) cat "${{action#read }}" >&2 ;;
    "write "*) echo pwned > "${{action#write }}" ;;
    "connect "*) python3 -c "import socket, sys
socket.create_connection(('127.0.0.1', int(sys.argv[1])), 2)" "${{action#connect }}" ;;
    "outlive") setsid sleep 3600 </dev/null >/dev/null 2>&1 & ;;
    "fork") i=0; while [ $i -lt 200 ]; do sleep 30 & i=$((i+1)); done ;;
    "files") python3 -c "import sys; files = [open('/dev/null') for _ in range(100000)]" ;;
    "symlink "*) gcc "$@" && rm -f "$out" && ln -s "${{action#symlink }}" "$out"; exit 0 ;;
    "fifo") gcc "$@" && rm -f "$out" && mkfifo "$out"; exit 0 ;;
    "socket") gcc "$@" && rm -f "$out" && python3 -c "import socket, sys
socket.socket(socket.AF_UNIX).bind(sys.argv[1])" "$out"; exit 0 ;;
    "hardlink "*) gcc "$@" && rm -f "$out" && ln "${{action#hardlink }}" "$out"; exit 0 ;;
    "userns") unshare --user true || echo "no user namespace" >&2 ;;
    "pty") python3 -c "import os; os.openpty(); print('pty opened')" >&2 || echo "no pty" >&2 ;;
    "fill") for f in /fill /dev/fill /dev/shm/fill; do
            head -c 16777216 /dev/zero > "$f" || echo "no room at $f" >&2
        done ;;
    "deep "*) python3 -c "import os, sys
for _ in range(int(sys.argv[1])):
    os.mkdir('d')
    os.chdir('d')
open('leaf', 'w').close()" "${{action#deep }}" ;;
esac
status=$?
[ $status -ne 0 ] && exit $status
exec gcc "$@"
"""


def write_fake_compilers(bin_dir: Path, markers: Path, slow_seconds: float = 2.0) -> None:
    """``hang-cc``, ``slow-cc``, ``gate-cc``, ``linger-cc``, ``whoami-cc`` and ``evil-cc``
    in ``bin_dir``."""
    bin_dir.mkdir(mode=0o755, exist_ok=True)
    markers.mkdir(exist_ok=True)
    markers.chmod(0o777)
    stand_ins = (
        ("hang-cc", _HANG), ("slow-cc", _SLOW), ("gate-cc", _GATE), ("whoami-cc", _WHOAMI),
        ("evil-cc", _EVIL), ("linger-cc", _LINGER),
    )  # fmt: skip
    for name, template in stand_ins:
        script = bin_dir / name
        script.write_text(template.format(markers=markers))
        script.chmod(0o755)
    (bin_dir / "slow-cc.seconds").write_text(f"{slow_seconds}\n")
    (bin_dir / "slow-cc.seconds").chmod(0o644)


def running(script: Path) -> list[int]:
    """Pids of live processes running ``script``, and of everything they started."""
    needle = str(script).encode()
    roots = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                if needle in cmdline.read():
                    roots.add(int(entry))
        except OSError:
            continue
    table = [(pid, ppid) for pid, ppid, _, state in process_table() if state != "Z"]
    alive = {pid for pid, _ in table}
    tree = roots & alive
    grew = True
    while grew:
        children = {pid for pid, ppid in table if ppid in tree} - tree
        tree |= children
        grew = bool(children)
    return sorted(tree)


def alive(pids: list[int]) -> list[int]:
    """Those of ``pids`` that are still live (not gone, not zombies)."""
    states = {pid: state for pid, _, _, state in process_table()}
    return [pid for pid in pids if pid in states and states[pid] != "Z"]


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def write_gcc_of_another_identity(directory: Path) -> Path:
    """``gcc`` and ``x86_64-linux-gnu-gcc`` in ``directory``/bin (returned): copies of the
    real gcc driver with one byte appended, so another binary digest, another compiler
    identity, with the same version line, compiling the same. A real ELF driver, it runs
    in its sealed sandbox as gcc does (a wrapper script would not, and its results would
    not be cached at all); it finds cc1 beside it, through ``directory``/lib/gcc."""
    real = Path(os.path.realpath("/usr/bin/gcc")).read_bytes()
    bin_dir = directory / "bin"
    bin_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    (directory / "lib").mkdir(mode=0o755, exist_ok=True)
    (directory / "lib" / "gcc").symlink_to("/usr/lib/gcc")
    for name in ("gcc", "x86_64-linux-gnu-gcc"):
        copy = bin_dir / name
        copy.write_bytes(real + b"\0")
        copy.chmod(0o755)
    return bin_dir
