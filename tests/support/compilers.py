"""Allowlisted stand-in compilers for tests (shell scripts, named for what they fake)."""

from __future__ import annotations

from pathlib import Path

# Preprocesses like gcc (the real client runs `-E` locally), then never finishes a
# compile: the stand-in for gcc spinning on bad input. It records its process group
# (the shell is the group leader) and starts a child, so tests can see the whole
# group die.
_HANG = """#!/bin/sh
for arg in "$@"; do
    case "$arg" in -E|--version) exec gcc "$@";; esac
done
sleep 3600 &
echo $! > {markers}/child.tmp && mv {markers}/child.tmp {markers}/child
echo $$ > {markers}/pgid.tmp && mv {markers}/pgid.tmp {markers}/pgid
while :; do sleep 0.1; done
"""

# A compiler that takes a while, then compiles for real (for shutdown draining).
_SLOW = """#!/bin/sh
for arg in "$@"; do
    case "$arg" in -E|--version) exec gcc "$@";; esac
done
echo $$ > {markers}/slow.tmp && mv {markers}/slow.tmp {markers}/slow
sleep {seconds}
exec gcc "$@"
"""


# Records who it runs as (uid, groups, niceness, session), then compiles for real.
_WHOAMI = """#!/bin/sh
for arg in "$@"; do
    case "$arg" in -E|--version) exec gcc "$@";; esac
done
{{ id -u; id -G; cut -d' ' -f19 /proc/$$/stat; ps -o sid= -p $$; }} > {markers}/whoami.tmp
mv {markers}/whoami.tmp {markers}/whoami
exec gcc "$@"
"""


def write_fake_compilers(bin_dir: Path, markers: Path, slow_seconds: float = 2.0) -> None:
    """``hang-cc``, ``slow-cc`` and ``whoami-cc`` in ``bin_dir``; they write into ``markers``."""
    bin_dir.mkdir(mode=0o755, exist_ok=True)
    markers.mkdir(exist_ok=True)
    markers.chmod(0o777)
    for name, template in (("hang-cc", _HANG), ("slow-cc", _SLOW), ("whoami-cc", _WHOAMI)):
        script = bin_dir / name
        script.write_text(template.format(markers=markers, seconds=slow_seconds))
        script.chmod(0o755)


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None
