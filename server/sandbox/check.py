"""The start checks of the sandbox: the programs of the launcher chain are there, every
allowlisted compiler runs in the sandbox (and the well-known ones compile there), and
the job limits inside are the ones asked for. The server refuses to start otherwise."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import tempfile
import time

import structlog

from server.compilers import Toolchain, known_driver, toolchain
from server.sandbox.identities import CompileUser, SandboxError
from server.sandbox.launcher import (
    JOB_ROOT_INSIDE,
    NICE,
    PRLIMIT,
    SANDBOX_PROCESSES,
    SETPRIV,
    SHELL,
    Mount,
    Sandbox,
    child_env,
)
from server.sandbox.sealed import pin, sealed_mounts, unpin

log = structlog.get_logger("distlb.server.sandbox")

_CHECK_TIMEOUT_S = 30.0


def check_programs(sandbox: Sandbox) -> None:
    """Raise :class:`SandboxError` when a program of the launcher chain is missing."""
    for program in (SETPRIV, NICE, PRLIMIT):
        if not os.access(program, os.X_OK):
            raise SandboxError(
                f"{program} is needed to start compilers (Debian: util-linux, coreutils)"
            )
    if sandbox.mode == "bwrap" and not (sandbox.bwrap and os.access(sandbox.bwrap, os.X_OK)):
        raise SandboxError(
            "--sandbox bwrap needs bubblewrap (Debian: apt install bubblewrap); "
            "--sandbox none runs compiles without it (docs/security.md)"
        )


COMPILE_CHECKED = frozenset({"gcc", "g++", "cc", "c++", "clang", "clang++"})
"""Names whose binaries the start check also compiles with (others, such as a site's
wrappers, are only asked their version: a compile could take any time)."""


USERNS_REFUSED = ("No permissions to create new namespace", "user namespace")
"""What bubblewrap says when the kernel (a sysctl, an AppArmor restriction) refuses the
unprivileged user namespaces it makes every sandbox in."""


def sandbox_hint(reason: str) -> str:
    """What to do about a sandbox that does not work, from what bwrap said."""
    hint = ""
    if any(words in reason for words in USERNS_REFUSED):
        hint = (
            "; the sandbox needs unprivileged user namespaces (bwrap runs as each job's "
            "uid): check `sysctl user.max_user_namespaces` (> 0), "
            "`kernel.unprivileged_userns_clone` (1, on Debian kernels) and "
            "`kernel.apparmor_restrict_unprivileged_userns` (0, or an AppArmor profile for "
            "bwrap): docs/operations.md"
        )
    return hint + "; --sandbox none runs compiles without bubblewrap (docs/security.md)"


def check_compilers(sandbox: Sandbox, compilers: dict[str, str], tmp_root: str) -> dict[str, str]:
    """Run every allowlisted compiler in the sandbox as a job would be run: ``--version``
    for each name, and a one-line compile for each distinct binary of the well-known
    names; all at once. Returns each name's first line of ``--version``. Raises
    :class:`SandboxError` with the reason when one cannot run there."""
    compile_with: dict[str, tuple[str, str]] = {}
    for name, path in sorted(compilers.items()):
        if name in COMPILE_CHECKED:
            compile_with.setdefault(os.path.realpath(path), (name, path))
    runs: list[tuple[str, str, bool, str, CompileUser | None, subprocess.Popen[bytes]]] = []
    try:
        for what, (name, path) in [
            *(("version", item) for item in compilers.items()),
            *(("compile", item) for item in compile_with.values()),
        ]:
            job_dir = tempfile.mkdtemp(prefix="check-", dir=tmp_root)
            user = sandbox.acquire_user()
            suffix = ".ii" if "++" in name else ".i"
            with open(os.path.join(job_dir, "input" + suffix), "w") as source:
                source.write("int distlb_sandbox_check;\n")
            if user is not None:
                os.chown(job_dir, user.uid, user.gid)
            inside = sandbox.job_root_inside or job_dir
            args = (
                ["--version"]
                if what == "version"
                else ["-c", f"{inside}/input{suffix}", "-o", f"{inside}/output.o"]
            )
            proc = _start_checked(sandbox, job_dir, user, [path, *args], inside)
            runs.append((name, path, what == "compile", job_dir, user, proc))
        versions: dict[str, str] = {}
        deadline = time.monotonic() + _CHECK_TIMEOUT_S
        for name, path, compiles, job_dir, _, proc in runs:
            try:
                out, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired as exc:
                raise SandboxError(f"{name}: the sandbox check did not finish in time") from exc
            produced = os.path.isfile(os.path.join(job_dir, "output.o"))
            if proc.returncode != 0 or (compiles and not produced):
                reason = err.decode("utf-8", "replace").strip()[-800:]
                hint = sandbox_hint(reason) if sandbox.mode == "bwrap" else ""
                doing = "compile" if compiles else "run"
                raise SandboxError(
                    f"{name} ({path}) does not {doing} in the {sandbox.mode} sandbox "
                    f"(exit {proc.returncode}): {reason or 'no output file'}{hint}"
                )
            if not compiles:
                lines = out.decode("utf-8", "replace").splitlines()
                versions[name] = lines[0] if lines else "unknown"
    finally:
        for _, _, _, job_dir, user, proc in runs:
            _end_run(sandbox, job_dir, user, proc)
    if sandbox.mode == "bwrap":
        check_limits(sandbox, tmp_root)
        check_renice(sandbox)
    log.info("sandbox_checked", mode=sandbox.mode, compilers=len(compilers),
             compiled_with=len(compile_with))  # fmt: skip
    return versions


def _end_run(
    sandbox: Sandbox, job_dir: str, user: CompileUser | None, proc: subprocess.Popen[bytes]
) -> None:
    """End a check's run (its whole group, when it is still going), and give back its
    uid and directory."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    sandbox.release_user(user)
    sandbox.job_dirs.remove(job_dir)


def _start_checked(
    sandbox: Sandbox, job_dir: str, user: CompileUser | None, command: list[str], inside: str
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        sandbox.job_argv(job_dir, user, command), cwd=job_dir, env=child_env(inside),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip


def check_limits(sandbox: Sandbox, tmp_root: str) -> None:
    """Read the limits back from inside a sandbox, of a process the job's shell starts
    and of the sandbox's pid 1 (bubblewrap's init, which a subverted compiler of the
    same uid could take over): raise :class:`SandboxError` unless each is the bound
    asked for, soft and hard (the process bound, set by the job's shell, is the job's
    only)."""
    job_dir = tempfile.mkdtemp(prefix="check-", dir=tmp_root)
    user = sandbox.acquire_user()
    marker = "==init=="
    try:
        if user is not None:
            os.chown(job_dir, user.uid, user.gid)
        inside = sandbox.job_root_inside or job_dir
        command = [SHELL, "-c", f"cat /proc/self/limits && echo {marker} && cat /proc/1/limits"]
        proc = _start_checked(sandbox, job_dir, user, command, inside)
        try:
            out, err = proc.communicate(timeout=_CHECK_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise SandboxError("the sandbox's limits check did not finish in time") from exc
        if proc.returncode != 0:
            reason = err.decode("utf-8", "replace").strip()[-400:]
            raise SandboxError(f"the job limits cannot be read in the sandbox: {reason}")
        job_text, _, init_text = out.decode("utf-8", "replace").partition(marker + "\n")
        # The init's process bound counts every process of the job's own uid (as root),
        # or is the server's (unprivileged: only the job's shell bounds the job).
        init_processes = sandbox.limits.processes + SANDBOX_PROCESSES if user else None
        for who, text in (("a job's process", job_text), ("the sandbox's init", init_text)):
            found = parse_limits(text)
            for name, want in sandbox.limits.expected().items():
                if who != "a job's process" and name == "Max processes":
                    if init_processes is None:
                        continue
                    want = init_processes
                if found.get(name) != (want, want):
                    raise SandboxError(
                        f"in the sandbox, {who} has {name!r} at {found.get(name)} "
                        f"(soft, hard), not {want}: its job limits do not hold"
                    )
    finally:
        sandbox.release_user(user)
        sandbox.job_dirs.remove(job_dir)


def parse_limits(text: str) -> dict[str, tuple[int | None, int | None]]:
    """``/proc/PID/limits`` as {name: (soft, hard)}, None for unlimited."""
    parsed: dict[str, tuple[int | None, int | None]] = {}
    for line in text.splitlines()[1:]:
        name, _, rest = line.partition("  ")
        fields = rest.split()
        if len(fields) < 2:
            continue
        soft, hard = (None if v == "unlimited" else int(v) for v in fields[:2])
        parsed[name.strip()] = (soft, hard)
    return parsed


def check_renice(sandbox: Sandbox) -> None:
    """With ``--nice`` and job uids of their own (as root), the server renices each
    sandbox started ahead, whose processes are another uid's: the kernel allows that
    only with CAP_SYS_NICE (a unit's CapabilityBoundingSet may have taken it). Try it
    on a process of a job uid; raise :class:`SandboxError` if it is refused (the jobs
    would run at the server's own niceness)."""
    if not sandbox.nice:
        return
    user = sandbox.acquire_user()
    if user is None:  # (unprivileged: the jobs are our own uid's; no capability needed)
        return
    proc = subprocess.Popen(
        [SETPRIV, f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups",
         SHELL, "-c", "read -r line"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + _CHECK_TIMEOUT_S
        while _uid(proc.pid) != user.uid:  # (until setpriv has become the job's uid)
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SandboxError("the renice check's process did not start as a job uid")
            time.sleep(0.005)
        try:
            os.setpriority(os.PRIO_PROCESS, proc.pid, sandbox.nice)
        except PermissionError as exc:
            raise SandboxError(
                f"--nice {sandbox.nice}: renicing a job's processes was refused ({exc}): the "
                "server needs CAP_SYS_NICE for it (add it to a unit's CapabilityBoundingSet), "
                "or give --nice 0"
            ) from exc
    finally:
        proc.kill()
        proc.wait()
        sandbox.release_user(user)


def _uid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            return int(next(line for line in status if line.startswith("Uid:")).split()[2])
    except (OSError, StopIteration, ValueError):
        return None


def check_sealed(
    sandbox: Sandbox, compilers: dict[str, str], versions: dict[str, str], tmp_root: str
) -> tuple[dict[str, list[Mount]], dict[str, str], dict[str, list[Mount]]]:
    """Each compiler binary's sealed sandbox (server/sandbox/sealed.py) that works: a
    one-line compile there, for every distinct binary at once (its names, ``cc`` and
    ``gcc``, share one sandbox), must make its object. Returns the mounts of each kind
    that works (by the binary's real path), each compiler path's kind, and each kind's
    files held open (sealed.py :func:`pin`: :func:`unpin` them when the sandbox is let
    go). A binary whose sealed sandbox does not work (a toolchain whose libraries the
    loader finds only through ld.so.cache) is logged, and its jobs run in the other
    sandbox and are not cached. Only gcc and clang drivers
    themselves are tried (:func:`known_driver`): a wrapper script's jobs run in the
    shared sandbox without a try (one that loops when a program it runs is missing took
    the check's whole timeout)."""
    if sandbox.mode != "bwrap":
        return {}, {}, {}
    found: dict[str, tuple[str, Toolchain]] = {}  # (a kind: a path to check it by, its files)
    for name, path in sorted(compilers.items()):
        if not known_driver(path, versions.get(name, "")):
            continue  # (a wrapper may run anything, and take any time: the shared sandbox)
        kind = os.path.realpath(path)
        if kind not in found:  # (one binary's names differ only in the links to it)
            found[kind] = (path, toolchain(path, versions.get(name, "")))
        first, files = found[kind]
        names = tuple(sorted({*files.names, os.path.abspath(path)}))
        found[kind] = (first, Toolchain(files.files, files.dirs, names))
    candidates: dict[str, list[Mount]] = {}
    for kind, (_, files) in found.items():
        try:
            candidates[kind] = sealed_mounts(files)
        except OSError as exc:
            log.warning("sealed_sandbox_unavailable", compiler=kind, reason=str(exc))
    trial = dataclasses.replace(sandbox, sealed=candidates)
    runs: list[tuple[str, str, CompileUser | None, subprocess.Popen[bytes]]] = []
    working: dict[str, list[Mount]] = {}
    try:
        for kind in candidates:
            job_dir = tempfile.mkdtemp(prefix="check-", dir=tmp_root)
            user = sandbox.acquire_user()
            proc = _start_sealed(trial, job_dir, user, found[kind][0], kind)
            runs.append((kind, job_dir, user, proc))
        deadline = time.monotonic() + _CHECK_TIMEOUT_S
        for kind, job_dir, _, proc in runs:
            try:
                _, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                err = b"did not finish in time"
            if proc.returncode == 0 and os.path.isfile(os.path.join(job_dir, "output.o")):
                working[kind] = candidates[kind]
            else:
                reason = err.decode("utf-8", "replace").strip()[-400:] or "no object"
                log.warning(
                    "sealed_sandbox_unavailable", compiler=kind, reason=reason,
                    effect="its jobs run in the shared sandbox, and are not cached",
                )  # fmt: skip
    finally:
        for _, job_dir, user, proc in runs:
            _end_run(sandbox, job_dir, user, proc)
    kinds = {path: os.path.realpath(path) for path in compilers.values()}
    kinds = {path: kind for path, kind in kinds.items() if kind in working}
    log.info("sealed_sandbox_checked", sealed=sorted(kinds), kinds=len(working))
    held: dict[str, list[Mount]] = {}
    try:
        for kind, mounts in working.items():
            held[kind] = pin(mounts)
    except OSError as exc:
        for mounts in held.values():
            unpin(mounts)
        raise SandboxError(f"the toolchain cannot be held open: {exc}") from exc
    return working, kinds, held


def _start_sealed(
    sandbox: Sandbox, job_dir: str, user: CompileUser | None, path: str, kind: str
) -> subprocess.Popen[bytes]:
    """A one-line compile in ``path``'s sealed sandbox (a C or C++ compiler alike
    compiles the text)."""
    with open(os.path.join(job_dir, "input.i"), "w") as source:
        source.write("int distlb_sealed_check;\n")
    if user is not None:
        os.chown(job_dir, user.uid, user.gid)
    inside = JOB_ROOT_INSIDE
    command = [path, "-c", f"{inside}/input.i", "-o", f"{inside}/output.o"]
    return subprocess.Popen(
        sandbox.job_argv(job_dir, user, command, sealed=kind), cwd=job_dir,
        env=child_env(inside, sealed=True), stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
