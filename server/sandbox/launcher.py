"""Every compile in a sandbox of its own: what a job can see, reach and use.

With ``--sandbox bwrap`` (the default) each compile runs under bubblewrap in
a mount namespace that holds only the toolchain, read-only, and the job's own
directory (at ``/tmp``, the only writable place, and the working directory: the
sandbox's own ``/`` and ``/dev`` are read-only);
in an empty network namespace, its own pid namespace (every process of the
job dies with it), with no new privileges, in a fresh session. As root, each
job also runs as a uid of its own, taken from ``--job-uids``; unprivileged,
jobs are kept apart by their namespaces. Resource limits bound memory, file
size, processes, open files and CPU time, with core dumps off.

The launcher is a chain of small programs, each exec'ing the next, because
Popen asked for a user, a niceness or rlimits would fork the whole server
instead of vfork (docs/decisions.md): ``setpriv`` (identity, no new
privileges), ``nice``, ``prlimit``, ``bwrap``, then a shell inside that sets
the process bound (``ulimit -p``) and execs the compiler. With ``--sandbox
none``: ``setpriv``, ``nice``, ``prlimit``, the compiler.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from typing import Literal

import structlog

from server.output import JobDirs
from server.sandbox.identities import CompileUser, JobIdentities, SandboxError

log = structlog.get_logger("distlb.server.sandbox")

SandboxMode = Literal["bwrap", "none"]
JOB_ROOT_INSIDE = "/tmp"
"""Where a job's directory is inside the sandbox: its working directory and its /tmp.
A fixed path, so that what a compiler records of its directory (clang's
DW_AT_comp_dir) is the same on every server, and the same as distccd's."""
SETPRIV = "/usr/bin/setpriv"
NICE = "/usr/bin/nice"
PRLIMIT = "/usr/bin/prlimit"
SHELL = "/bin/sh"
DEVICES = ("null", "zero", "full", "random", "urandom")
DEV_ARGS = (
    "--tmpfs", "/dev",
    *(arg for name in DEVICES for arg in ("--dev-bind", f"/dev/{name}", f"/dev/{name}")),
    "--symlink", "/proc/self/fd", "/dev/fd",
    *(arg for fd, name in enumerate(("stdin", "stdout", "stderr"))
      for arg in ("--symlink", f"/proc/self/fd/{fd}", f"/dev/{name}")),
)  # fmt: skip
"""A job's /dev: the device nodes a compile may use, and no more. Not bwrap's ``--dev``,
which adds a devpts instance (/dev/pts, /dev/ptmx): opening /dev/ptmx from a source's
line marker (a diagnostic quoting line 1 of it) blocks a compile until its lifetime
ends, and each pty a job opens counts against the host's kernel.pty.max; nor /dev/tty
or /dev/shm, which no compile needs."""
SANDBOX_PROCESSES = 3
"""Processes of a sandbox besides its job's: bubblewrap's monitor and init, and the
shell that becomes the compiler."""
_RUN_SENT = "nl='\n' && IFS= read -r line && exec </dev/null && eval \"exec $line\""
"""The rest of a sandbox's shell started ahead of its job: read the command line (a
newline in an argument comes as ``"$nl"``: see server/sandbox/spawn.py send_command), then
become the compiler (its exit status and its signals are the compiler's own)."""
DEFAULT_JOB_UIDS = (900_000_000, 900_000_999)
"""Where per-job uids come from when the server runs as root: far above the uids
that people, services and containers get (docs/security.md)."""


@dataclass(frozen=True, slots=True)
class JobLimits:
    """Per-job resource bounds (``prlimit``); None leaves a resource unbounded."""

    memory_bytes: int | None = 4096 * 1024 * 1024
    file_bytes: int = 1024 * 1024 * 1024
    processes: int = 64
    open_files: int = 1024
    cpu_s: int | None = None

    def prlimit_args(self, *, nproc: int | None) -> list[str]:
        """The limits as ``prlimit`` arguments, with ``nproc`` as the process bound
        (None: none, the sandbox's shell sets it: see ``job_argv``)."""
        args = [f"--fsize={self.file_bytes}"]
        if nproc is not None:
            args.append(f"--nproc={nproc}")
        args += [f"--nofile={self.open_files}", "--core=0"]
        if self.memory_bytes is not None:
            args.append(f"--as={self.memory_bytes}")
        if self.cpu_s is not None:
            args.append(f"--cpu={self.cpu_s}")
        return args

    def expected(self) -> dict[str, int | None]:
        """What /proc/PID/limits of a job must say, soft and hard (None: unlimited),
        by the names that file uses."""
        return {
            "Max file size": self.file_bytes,
            "Max open files": self.open_files,
            "Max core file size": 0,
            "Max address space": self.memory_bytes,
            "Max cpu time": self.cpu_s,
            "Max processes": self.processes,
        }


@dataclass(frozen=True, slots=True)
class Layout:
    """A pump job's view (server/pump.py): the directories of its own tree bound at
    the client's own top-level names (``/home``, ``/tmp``, ...), and where it runs."""

    binds: tuple[tuple[str, str], ...]
    """(directory on the server, where the job sees it), each writable by the job."""
    chdir: str
    path: str = "/usr/bin:/bin"
    """The job's PATH: not the server's, whose directories a request may make (a
    review), only the toolchain's."""
    read_only: tuple[str, ...] = ()
    """Directories bound read-only besides the toolchain (a sealed pump job's system
    include directories)."""


@dataclass(frozen=True, slots=True)
class Mount:
    """One thing a sandbox holds: a read-only bind, or a symlink; or (``ro-bind-fd``,
    never given to bubblewrap: it cannot bind a file renamed over) a file as it was
    identified, held open, ``source`` the descriptor's number."""

    kind: Literal["ro-bind", "ro-bind-fd", "symlink"]
    source: str
    target: str

    def args(self) -> list[str]:
        return [f"--{self.kind}", self.source, self.target]

    def describe(self) -> str:
        return self.target if self.kind != "symlink" else f"{self.target} -> {self.source}"


@dataclass
class Sandbox:
    """How this server runs compiles: the launcher chain and the job directory layout."""

    mode: SandboxMode
    limits: JobLimits
    nice: int = 5
    bwrap: str = ""
    mounts: list[Mount] = field(default_factory=list)
    identities: JobIdentities | None = None
    """Per-job uids (root, bwrap)."""
    sealed: dict[str, list[Mount]] = field(default_factory=dict)
    """Per kind of sealed sandbox (a compiler binary's real path), its mounts
    (server/sandbox/sealed.py): only those that passed their start check (bwrap)."""
    held: dict[str, list[Mount]] = field(default_factory=dict)
    """Per kind of sealed sandbox, its files as they were identified, held open
    (server/sandbox/sealed.py :func:`pin`): what tells a package upgrade."""
    settling_until: float = 0.0
    """After an upgrade's new identities (monotonic time): until then sealed jobs are
    turned away, while balancers learn them from the next report."""
    sealed_kinds: dict[str, str] = field(default_factory=dict)
    """Per compiler path, the kind of sealed sandbox its jobs run in (``cc`` and ``gcc``
    share one: the same binary)."""
    shared_user: CompileUser | None = None
    """The one compile user (root, --sandbox none)."""
    job_dirs: JobDirs = field(default_factory=JobDirs)
    """Removes job directories, and counts those it could not."""

    @property
    def job_root_inside(self) -> str | None:
        """Where the job directory is for the compiler: None means where it really is."""
        return JOB_ROOT_INSIDE if self.mode == "bwrap" else None

    def launcher(
        self,
        job_dir: str,
        user: CompileUser | None,
        nice_exec: bool = True,
        info_fd: int | None = None,
        sealed: str | None = None,
        layout: Layout | None = None,
    ) -> list[str]:
        """The programs a job's command is exec'd through, for a job in ``job_dir`` run
        as ``user`` (None: as the server, which is not root). Under bubblewrap, the
        command itself is a shell that sets the process bound (see :meth:`job_argv`).
        ``nice_exec=False``: no ``nice`` (the server renices the sandbox itself before
        its job runs: see :meth:`renice_waiting`). ``sealed``: a kind of
        :attr:`sealed`, whose sealed sandbox this is (its toolchain only, no /proc).
        ``layout``: a pump job's binds and working directory instead of ``job_dir`` at
        /tmp."""
        chain = [SETPRIV, "--no-new-privs"]
        if user is not None:
            chain += [f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups"]
        chain.append("--")
        if self.nice and nice_exec:
            chain += [NICE, "-n", str(self.nice), "--"]
        bwrap = self.mode == "bwrap"
        # Every bound is set before bwrap, so that every process of the sandbox has it,
        # bwrap's own init included (a job can ptrace it: same uid). The process bound
        # counts every process of the uid: as root each job has a uid of its own, so it
        # counts the job's, the sandbox's own three with them; unprivileged it would
        # count the server's, so there only the job's shell sets it, inside.
        nproc = None if bwrap else self.limits.processes
        if bwrap and user is not None and self.identities is not None:
            nproc = self.limits.processes + SANDBOX_PROCESSES
        chain += [PRLIMIT, *self.limits.prlimit_args(nproc=nproc), "--"]
        if not bwrap:
            return chain
        mounts = self.mounts if sealed is None else self.sealed[sealed]
        own = ["--bind", job_dir, JOB_ROOT_INSIDE]
        if layout is not None:
            own = [arg for bind in layout.binds for arg in ("--bind", *bind)]
        return [
            *chain,
            self.bwrap, "--unshare-all", "--die-with-parent", "--new-session",
            "--cap-drop", "ALL",
            # No user namespace of the job's own (it would hold every capability over
            # new mount and network namespaces): bubblewrap >= 0.8; needs --unshare-user
            # said (it is implied anyway: bubblewrap runs as the job's uid).
            "--unshare-user", "--disable-userns",
            *(["--info-fd", str(info_fd)] if info_fd is not None else []),
            # The job's directory first: a toolchain under /tmp (a test's stand-ins)
            # is then mounted over it rather than hidden by it.
            *own,
            *(arg for mount in mounts for arg in mount.args()),
            *(a for d in (layout.read_only if layout else ()) for a in ("--ro-bind", d, d)),
            # (no /proc for a sealed or pump job: a source read /proc/cmdline back)
            *(() if sealed or layout else ("--proc", "/proc")), *DEV_ARGS,
            # The sandbox's own / and /dev are tmpfs, in memory and of no size: writable,
            # a job could fill the machine's RAM there, past every job bound. Nothing of
            # a compile writes there (its directory is its TMPDIR and HOME): read-only.
            "--remount-ro", "/dev", "--remount-ro", "/",
            "--chdir", JOB_ROOT_INSIDE if layout is None else layout.chdir,
            "--",
        ]  # fmt: skip

    def upgraded(self, sealed: str) -> bool:
        """Whether a file of that kind of sealed sandbox is not the one identified any
        more (a package upgrade: server/sandbox/sealed.py :func:`pin`), or the kind was
        identified again moments ago (:attr:`settling_until`)."""
        if time.monotonic() < self.settling_until:
            return True
        return any(held_changed(mount) for mount in self.held.get(sealed, ()))

    def job_argv(
        self,
        job_dir: str,
        user: CompileUser | None,
        command: list[str] | None,
        info_fd: int | None = None,
        sealed: str | None = None,
        layout: Layout | None = None,
    ) -> list[str]:
        """The whole command line that starts a job: ``command``, or with None a
        sandbox that waits for its command (one line on stdin, quoted).

        Under bubblewrap the command is run by a shell that first sets the process
        bound (``ulimit -p``, soft and hard) inside the job's user namespace, where the
        kernel counts the job's own processes; set before bwrap, it would cap every
        process of the uid, which unprivileged is the server's (seen: a job after a
        fork bomb failed "Cannot fork")."""
        if self.mode != "bwrap":
            if command is None:
                raise SandboxError("--sandbox none starts no sandbox ahead of its job")
            return [*self.launcher(job_dir, user), *command]
        then = _RUN_SENT if command is None else 'exec "$@"'
        script = f"ulimit -p {int(self.limits.processes)} && {then}"
        # (info_fd: bubblewrap writes its init's pid there, as JSON, once it has one)
        chain = self.launcher(job_dir, user, command is not None, info_fd, sealed, layout)
        return [*chain, SHELL, "-c", script, "sh", *(command or [])]

    def renice_waiting(self, monitor: int) -> None:
        """Give a sandbox started ahead (``job_argv`` without a command, ``monitor``
        its first process) the job's niceness: an exec of ``nice`` fewer per job.
        Each process of its chain in turn, parent first, so that a process forked
        meanwhile inherits the value and one forked before is found: bubblewrap's
        monitor, its init, and the waiting shell. Called when the sandbox is started
        (its setup runs niced) and again before its command is sent (nothing of the
        job runs before)."""
        if not self.nice:
            return
        pid: int | None = monitor
        for _ in range(SANDBOX_PROCESSES):
            if pid is None:
                return
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.setpriority(os.PRIO_PROCESS, pid, self.nice)
            found = children(pid)
            pid = found[0] if len(found) == 1 else None

    def acquire_user(self) -> CompileUser | None:
        if self.identities is not None:
            return self.identities.acquire()
        return self.shared_user

    def release_user(self, user: CompileUser | None) -> None:
        if self.identities is not None and user is not None:
            self.identities.release(user)

    def _who(self) -> str:
        if self.identities is not None:
            return f"{self.identities.first}-{self.identities.last}"
        if self.shared_user is not None:
            return self.shared_user.name
        if self.mode == "bwrap":
            return "the server's own, each job in a user namespace of its own"
        return "the server's own"

    def describe(self) -> dict[str, object]:
        """What /status says of the sandbox."""
        limits = self.limits
        return {
            "mode": self.mode,
            "mounts": [m.describe() for m in self.mounts] if self.mode == "bwrap" else [],
            "sealed": sorted(self.sealed_kinds),
            "network": "none" if self.mode == "bwrap" else "host",
            "job_uids": self._who(),
            "limits": {
                "memory_mb": None if limits.memory_bytes is None else limits.memory_bytes >> 20,
                "file_mb": limits.file_bytes >> 20,
                "processes": limits.processes,
                "open_files": limits.open_files,
                "cpu_s": limits.cpu_s,
                "core_dumps": False,
            },
        }


def held_changed(mount: Mount) -> bool:
    """Whether the path of a file held open (a ``ro-bind-fd`` record) now names another
    file, or none."""
    try:
        now = os.stat(mount.target)
        was = os.fstat(int(mount.source))
    except OSError:
        return True
    return (now.st_dev, now.st_ino, now.st_size, now.st_mtime_ns) != (
        was.st_dev, was.st_ino, was.st_size, was.st_mtime_ns
    )  # fmt: skip


def children(pid: int) -> list[int]:
    """The children of a single-threaded process ``pid`` (none when it has gone)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as listing:
            return [int(child) for child in listing.read().split()]
    except (OSError, ValueError):
        return []


PASSED_ENV = ("PATH", "LANG", "LC_ALL", "LC_MESSAGES", "LC_CTYPE")


def child_env(job_dir: str, sealed: bool = False, path: str | None = None) -> dict[str, str]:
    """The compiler's environment: PATH and locale from the server's, the job dir as
    HOME and TMPDIR, nothing else (no GCC_EXEC_PREFIX, COMPILER_PATH, ...); and clang
    told not to run llvm-symbolizer when it crashes (a source can crash it: ``#pragma
    clang __debug crash``; an eleventh review). ``sealed``: no locale (a sealed sandbox
    has no locale files; the C locale is the same on every server). ``path``: the PATH
    instead of the server's."""
    passed = ("PATH",) if sealed else PASSED_ENV
    env = {name: os.environ[name] for name in passed if name in os.environ}
    env.setdefault("PATH", os.defpath)
    if path is not None:  # (a pump job's: server/pump.py)
        env["PATH"] = path
    env["HOME"] = env["TMPDIR"] = job_dir
    env["LLVM_DISABLE_SYMBOLIZATION"] = "1"
    return env
