"""Run a daemon under a systemd unit's hardening, as far as this machine allows
without systemd as PID 1 (there is none here to ``systemd-run`` it).

What is emulated, from the unit's own ``[Service]`` settings, in a mount namespace of
the daemon's own (``unshare --mount``), then ``setpriv``:

| setting | emulated as |
|---|---|
| ``ProtectSystem=strict`` | every mount read-only but ``/dev``, ``/proc``, ``/sys`` |
| ``PrivateTmp=yes`` | a fresh tmpfs on ``/tmp``; the given writable dirs bound in at their paths |
| ``ProtectHome=yes`` | an empty tmpfs on ``/home``, ``/root``, ``/run/user`` (read-only |
|  | instead where this interpreter lives there, as the unit's comment says to do) |
| ``PrivateDevices=yes`` | a tmpfs ``/dev`` with null, zero, full, random, urandom and tty |
| ``ProtectControlGroups=yes`` | ``/sys/fs/cgroup`` read-only |
| ``ProtectProc=invisible`` | a fresh ``/proc`` with ``hidepid=invisible`` |
| ``ProtectKernelTunables=yes`` | ``/proc/sys`` and ``/sys`` read-only |
| ``ProtectKernelLogs=yes`` | ``/proc/kmsg`` covered |
| ``NoNewPrivileges=yes`` | ``setpriv --no-new-privs`` |
| ``CapabilityBoundingSet=`` | ``setpriv --bounding-set`` (and no inheritable or ambient) |

Not emulated (seccomp and the like, which only systemd applies; ``systemd-analyze
verify`` and ``security`` check those): RestrictAddressFamilies, RestrictNamespaces,
SystemCallFilter, SystemCallArchitectures, LockPersonality, RestrictRealtime,
RestrictSUIDSGID, ProtectKernelModules, ProtectClock, ProtectHostname, the cgroup
limits (MemoryMax, TasksMax), DevicePolicy.
"""

from __future__ import annotations

import configparser
import shlex
import sys
from pathlib import Path

EMULATED = {
    "ProtectSystem", "PrivateTmp", "ProtectHome", "PrivateDevices", "ProtectControlGroups",
    "ProtectProc", "ProtectKernelTunables", "ProtectKernelLogs", "NoNewPrivileges",
    "CapabilityBoundingSet",
}  # fmt: skip
CHECKOUT = Path(__file__).resolve().parents[2]
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")


def service_settings(unit: Path) -> dict[str, str]:
    """The unit's ``[Service]`` settings (the last of a repeated key)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # (keys keep their case)
    parser.read_string(unit.read_text())
    return dict(parser["Service"])


def _capabilities(value: str) -> str:
    """``CapabilityBoundingSet=CAP_A CAP_B`` as setpriv's ``-all,+a,+b``."""
    kept = [cap.removeprefix("CAP_").lower() for cap in value.split()]
    return ",".join(["-all", *(f"+{cap}" for cap in kept)])


def hardened_prefix(settings: dict[str, str], writable: list[Path]) -> list[str]:
    """A command prefix that runs what follows under ``settings`` (see the table);
    ``writable``: directories that stay writable (the unit's ReadWritePaths,
    CacheDirectory and the like), bound in at their own paths. The command is exec'd,
    so it keeps the prefix's process."""
    on = {key for key, value in settings.items() if value.lower() in ("yes", "true", "strict")}
    interpreter_home = any(
        str(Path(sys.executable).resolve()).startswith(top) for top in ("/root/", "/home/")
    )
    script = ["set -e", "mount --make-rprivate /"]
    # the program itself (the checkout and its venv) is installed outside /tmp on a host;
    # when a test's checkout is under /tmp (a clean clone) it is carried in, read-only
    under_tmp = {path for path in (CHECKOUT, Path(sys.prefix).resolve())
                 if path.is_relative_to("/tmp")}  # fmt: skip
    program = {str(path) for path in under_tmp
               if not any(path != top and path.is_relative_to(top)
                          for top in under_tmp)}  # fmt: skip
    keep = " ".join(shlex.quote(str(path)) for path in [*writable, *sorted(program)])
    if "PrivateTmp" in on:
        # the writable dirs under /tmp are carried into the fresh tmpfs at their paths
        script += [
            "stash=$(mktemp -d /dev/shm/unit-emulation.XXXXXX)",
            f'for dir in {keep}; do case $dir in /tmp/*) mkdir -p "$stash$dir";'
            ' mount --bind "$dir" "$stash$dir";; esac; done',
            "mount -t tmpfs -o mode=1777 private-tmp /tmp",
            f'for dir in {keep}; do case $dir in /tmp/*) mkdir -p "$dir";'
            ' mount --move "$stash$dir" "$dir";; esac; done',
            *(f"mount -o remount,bind,ro {shlex.quote(path)}" for path in sorted(program)),
        ]
    if "ProtectHome" in on:
        home = "ro" if interpreter_home else "hidden"
        script += [
            f"for dir in /home /root /run/user; do [ -d $dir ] || continue; "
            f"if [ {home} = ro ]; then mount --bind $dir $dir && "
            "mount -o remount,bind,ro $dir; else mount -t tmpfs -o mode=0755 home $dir; fi; done"
        ]
    if "PrivateDevices" in on:
        script += [
            "devs=$(mktemp -d /tmp/unit-devices.XXXXXX)",  # (not under /dev: covered next)
            *(f"touch $devs/{d} && mount --bind /dev/{d} $devs/{d}" for d in DEVICES),
            "mount -t tmpfs -o mode=0755 private-dev /dev",
            *(f"touch /dev/{d} && mount --move $devs/{d} /dev/{d}" for d in DEVICES),
            "mkdir /dev/shm && mount -t tmpfs -o mode=1777 shm /dev/shm",
        ]
    if settings.get("ProtectSystem") == "strict":
        script += [
            "awk '{print $5}' /proc/self/mountinfo | sort -u | while read -r m; do case $m in "
            "/dev|/dev/*|/proc|/proc/*|/sys|/sys/*|/tmp|/tmp/*) continue;; esac; "
            'mount -o remount,bind,ro "$m" 2>/dev/null || true; done',
        ]
    if "ProtectControlGroups" in on:
        script += ["mount -o remount,bind,ro /sys/fs/cgroup"]
    if settings.get("ProtectProc") == "invisible":
        script += ["mount -t proc -o hidepid=invisible proc /proc"]
    if "ProtectKernelTunables" in on:
        script += ["mount --bind /proc/sys /proc/sys", "mount -o remount,bind,ro /proc/sys",
                   "mount -o remount,bind,ro /sys"]  # fmt: skip
    if "ProtectKernelLogs" in on:
        script += ["mount --bind /dev/null /proc/kmsg"]
    setpriv = ["setpriv", "--inh-caps=-all", "--ambient-caps=-all"]
    if "NoNewPrivileges" in on:
        setpriv.append("--no-new-privs")
    if settings.get("CapabilityBoundingSet") is not None:
        setpriv.append(f"--bounding-set={_capabilities(settings['CapabilityBoundingSet'])}")
    script.append(f'exec {shlex.join(setpriv)} "$@"')
    return ["unshare", "--mount", "--propagation", "private", "bash", "-c",
            "\n".join(script), "unit-emulation"]  # fmt: skip
