"""The lock in requirements/: reading its pins, and making a venv hold exactly them.

    python scripts/lock.py sync LOCK...   uninstall what no LOCK names (run by
                                          bootstrap.sh with the venv's python)
    python scripts/lock.py check LOCK...  exit 1, naming each difference, unless the
                                          environment holds exactly the LOCKs' pins
    python scripts/lock.py constraints LOCK
                                          print LOCK's pins (markers kept, hashes not:
                                          pip takes none in a constraints file) for
                                          ``pip install -c`` (scripts/update-deps)

The lock is universal (scripts/update-deps resolves it for every Python >= 3.11): a
pin may carry an environment marker (``async-timeout==5.0.1 ; python_full_version <
'3.11.3'``), and only the pins whose markers hold here count. The markers are read with
``packaging``, which the build tools' lock installs first (requirements/build.txt).
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)[ \t]*(?:;([^\\\n]*))?", re.MULTILINE)
PROJECT = "distlb"


def normalize(name: str) -> str:
    """PEP 503's name: case and runs of ``-_.`` do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path, environment: dict[str, str] | None = None) -> dict[str, str]:
    """``{normalized name: version}`` for every ``name==version`` line of a lock whose
    marker holds in ``environment`` (default: this interpreter's)."""
    pins: dict[str, str] = {}
    for name, version, marker in PIN.findall(path.read_text()):
        if not marker.strip() or Marker(marker.strip()).evaluate(environment):
            pins[normalize(name)] = version
    return pins


def installed() -> dict[str, str]:
    """What this interpreter's environment holds, as ``{normalized name: version}``."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found[normalize(name)] = dist.version
    return found


def sync(locks: list[Path]) -> list[str]:
    """Uninstall every distribution that no lock names (distlb itself stays); returns
    their names."""
    wanted = {name for lock in locks for name in read_pins(lock)} | {PROJECT}
    extra = sorted(set(installed()) - wanted)
    if extra:
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", *extra], check=True)
    return extra


def differences(locks: list[Path]) -> list[str]:
    """How this environment differs from the locks' pins (distlb itself aside)."""
    wanted: dict[str, str] = {}
    for lock in locks:
        wanted |= read_pins(lock)
    have = installed()
    have.pop(PROJECT, None)
    found = [
        f"{name}: locked {version}, installed {have.get(name, 'nothing')}"
        for name, version in sorted(wanted.items())
        if have.get(name) != version
    ]
    unlocked = sorted(set(have) - set(wanted))
    found += [f"{name}: installed {have[name]}, not in the lock" for name in unlocked]
    return found


def constraints(lock: Path) -> str:
    """A pip constraints file of ``lock``'s pins, in its order, with their markers."""
    lines = [
        "# The farm lock's versions, for: pip install -c constraints.txt distlb-VERSION.whl",
        f"# (scripts/update-deps writes it from requirements/{lock.name}; docs/operations.md)",
    ]
    for name, version, marker in PIN.findall(lock.read_text()):
        marker = marker.strip()
        lines.append(f"{name}=={version}" + (f" ; {marker}" if marker else ""))
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("sync", "check", "constraints"):
        print("usage: lock.py sync|check|constraints LOCK...", file=sys.stderr)
        return 2
    locks = [Path(p) for p in argv[1:]]
    if argv[0] == "constraints":
        print(constraints(locks[0]), end="")
        return 0
    if argv[0] == "check":
        found = differences(locks)
        print("\n".join(found) or "lock: the environment holds exactly the lock")
        return 1 if found else 0
    removed = sync(locks)
    if removed:
        print(f"lock: removed what the lock does not name: {' '.join(removed)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
