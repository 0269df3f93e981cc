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
from server.sandbox.identities import CompileUser, JobIdentities, SandboxError
from server.sandbox.launcher import JobLimits, Mount, Sandbox

_TOP_LEVEL = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives")


def toolchain_mounts(compiler_paths: list[str], extra_dirs: list[str]) -> list[Mount]:
    """What a sandbox must hold for these compilers to run, found on this machine:
    /usr, the top-level links into it (merged /usr) or the directories themselves, the
    dynamic loader's files in /etc, every directory a compiler's symlink chain passes
    through (``/etc/alternatives`` for ``cc``), the install tree of a compiler outside
    /usr, and ``extra_dirs`` (the trusted specs directories) that exist."""
    mounts: dict[str, Mount] = {"/usr": Mount("ro-bind", "/usr", "/usr")}
    for name in _TOP_LEVEL:
        path = "/" + name
        if os.path.islink(path):
            mounts[path] = Mount("symlink", os.readlink(path), path)
        elif os.path.isdir(path):
            mounts[path] = Mount("ro-bind", path, path)
    for name in _ETC_FILES:
        path = "/etc/" + name
        if os.path.exists(path):
            mounts[path] = Mount("ro-bind", path, path)
    for compiler in compiler_paths:
        for directory in _link_chain_dirs(compiler):
            if not _covered(directory, mounts):
                mounts[directory] = Mount("ro-bind", directory, directory)
        real = os.path.realpath(compiler)
        if not _covered(real, mounts):
            prefix = os.path.dirname(os.path.dirname(real))  # .../bin/gcc -> the install
            mounts[prefix] = Mount("ro-bind", prefix, prefix)
    for directory in extra_dirs:
        if os.path.isdir(directory) and not _covered(directory, mounts):
            mounts[directory] = Mount("ro-bind", directory, directory)
    return list(mounts.values())


def _link_chain_dirs(path: str) -> list[str]:
    """The directories of every link a path resolves through (bounded, as the kernel is)."""
    dirs = []
    current = os.path.abspath(path)
    for _ in range(40):
        if not os.path.islink(current):
            break
        dirs.append(os.path.dirname(current))
        current = os.path.normpath(os.path.join(os.path.dirname(current), os.readlink(current)))
    return dirs


def _covered(path: str, mounts: dict[str, Mount]) -> bool:
    return any(
        m.kind == "ro-bind" and (path == m.target or path.startswith(m.target + os.sep))
        for m in mounts.values()
    ) or any(m.kind == "symlink" and path.startswith(m.target + os.sep) for m in mounts.values())


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
