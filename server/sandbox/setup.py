"""How a server's compiles are isolated, set up from its config: the compile user
(``--sandbox none``, as root), the sandbox (``--sandbox bwrap``: job uids, mounts,
limits), whether the compilers can reach ``--tmp-dir``. Used at start and by a reload
(server/reloading.py)."""

from __future__ import annotations

import math
import os
import pwd
import shutil
import stat

from server.config import ConfigError, ServerConfig
from server.sandbox.check import check_programs
from server.sandbox.launcher import (
    CompileUser,
    JobIdentities,
    JobLimits,
    Sandbox,
    SandboxError,
    toolchain_mounts,
)


def compile_user(user: str | None) -> CompileUser | None:
    """Who compilers run as: when we are root, ``user`` or the first unprivileged
    default that exists (as distccd does); otherwise ourselves (None)."""
    if os.geteuid() != 0:
        return None
    candidates = [user] if user else list(UNPRIVILEGED)
    for name in candidates:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        if entry.pw_uid == 0:
            raise ConfigError(f"--user {name!r} is root; compilers must not run as root")
        return CompileUser(name, entry.pw_uid, entry.pw_gid)
    raise ConfigError(f"--user: no such user among {candidates}")


UNPRIVILEGED = ("distcc", "distccd", "nobody")


def searchable_by(path: str, user: CompileUser) -> bool:
    """True when ``user`` can reach into ``path`` (search permission on it and every parent).

    Job dirs are created by us and handed to the compile user; it needs only that.
    """
    current = os.path.abspath(path)
    while True:
        st = os.stat(current)
        if st.st_uid == user.uid:
            bit = stat.S_IXUSR
        elif st.st_gid == user.gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
        parent = os.path.dirname(current)
        if parent == current:
            return True
        current = parent


def make_sandbox(
    config: ServerConfig, compilers: dict[str, str], identities: JobIdentities | None = None
) -> Sandbox:
    """The sandbox the config asks for, checked to work here. Raises ConfigError.
    ``identities``: the job uids to use (a reload keeps the running server's, whose
    uids running jobs hold); default: new ones from the config."""
    reused = identities is not None
    root = os.geteuid() == 0
    limits = JobLimits(
        memory_bytes=config.job_memory_mb * 1024 * 1024 if config.job_memory_mb else None,
        file_bytes=config.job_file_mb * 1024 * 1024,
        processes=config.job_processes,
        open_files=config.job_open_files,
        cpu_s=math.ceil(config.job_lifetime) + 1,  # the lifetime kill comes first
    )
    sandbox = Sandbox(mode="none", limits=limits, nice=config.nice)
    if config.sandbox == "bwrap":
        if identities is None and root:
            identities = JobIdentities(*config.job_uid_range())
        sandbox = Sandbox(
            mode="bwrap",
            limits=limits,
            nice=config.nice,
            bwrap=shutil.which("bwrap") or "",
            mounts=toolchain_mounts(list(compilers.values()), config.trusted_specs_dir),
            identities=identities,
        )
    else:
        sandbox.shared_user = compile_user(config.user)
    try:
        check_programs(sandbox)
        if sandbox.identities is not None and not reused:
            sandbox.identities.check_unused()
    except SandboxError as exc:
        raise ConfigError(str(exc)) from exc
    return sandbox
