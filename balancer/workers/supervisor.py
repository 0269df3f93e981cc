"""``--workers N``: N processes behind one distcc port, seen from outside as one balancer.

The supervisor (the process started) binds N listening sockets to the port with
``SO_REUSEPORT`` (the kernel spreads connections over them), makes the memory the
workers share (:mod:`balancer.workers.shared`), and forks the workers before any event loop
or thread exists. Each worker is a whole balancer (its own reports, probes, queue and
cache connections) on its own socket, counting in the shared memory what it holds on
each backend. Worker 0 serves the admin port; the others serve theirs on a Unix
socket in a directory only this user may enter, and worker 0 merges their /status and
/metrics into its own, so the dashboard, scrapers and keepalived see one balancer.

The supervisor forwards SIGTERM, SIGINT and SIGHUP to every worker. On SIGHUP it first
reads the config itself and writes what the workers are to apply, the config in force
and whether the reload was refused, to one snapshot (``config.json`` beside the admin
sockets); every worker reloads from that snapshot, so all apply the same config, or
all refuse it; a worker started again later starts from it too. A worker that dies
is started again on the same socket (connections queued there wait for it), unless
it exited with an error within :data:`EARLY_EXIT_S` of its start, which ends the
balancer (a worker that cannot start will not start the next time either).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from balancer.workers.shared import SharedCounts

log = structlog.get_logger("distlb.balancer.workers")

EARLY_EXIT_S = 5.0
SNAPSHOT = "config.json"
"""The config the workers reload from (in their directory)."""
PEER_TIMEOUT_S = 2.0
"""How long worker 0 waits for another worker's /status or /metrics."""
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@dataclass
class WorkerPlace:
    """Where one worker stands among the others."""

    index: int
    count: int
    sock: socket.socket
    """Its listening socket (one of the SO_REUSEPORT group)."""
    shared: SharedCounts
    peers_dir: str

    @property
    def snapshot(self) -> str:
        """Where the supervisor writes the config the workers reload from."""
        return os.path.join(self.peers_dir, SNAPSHOT)

    def admin_socket(self, index: int) -> str:
        return os.path.join(self.peers_dir, f"worker-{index}.sock")

    @property
    def peers(self) -> list[str]:
        """The admin sockets of the other workers (for worker 0 to merge)."""
        return [self.admin_socket(i) for i in range(1, self.count)] if self.index == 0 else []


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` sockets listening on one address and port (0: the first picks one)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            address = (address[0], sock.getsockname()[1], *address[2:])
            sock.listen(1024)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def supervise(
    host: str,
    port: int,
    count: int,
    run_worker: Callable[[WorkerPlace], int],
    reload: Callable[[str], None] | None = None,
) -> int:
    """Start ``count`` workers, each ``run_worker(place)`` in a forked process (its
    return value is the worker's exit status); return the balancer's exit status.
    ``reload(snapshot_path)`` runs on SIGHUP, before the workers hear of it."""
    try:
        sockets = listening_sockets(host, port, count)
    except OSError as exc:
        log.error("startup_failed", reason=str(exc))
        return 1
    shared = SharedCounts(count)
    peers_dir = tempfile.mkdtemp(prefix="distlb-balancer-")  # 0700
    children: dict[int, tuple[int, float]] = {}
    stopping = False

    def spawn(index: int) -> None:
        # No forwarded signal may land between the fork and the child's own handlers
        # (nor before the parent knows the child's pid).
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
        pid = os.fork()
        if pid == 0:  # the worker
            status = 1
            try:
                # A SIGHUP before the worker's loop takes it would end the worker.
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                for signum in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(signum, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
                for other, sock in enumerate(sockets):
                    if other != index:
                        sock.close()
                shared.become(index)
                structlog.contextvars.bind_contextvars(worker=index)
                status = run_worker(WorkerPlace(index, count, sockets[index], shared, peers_dir))
            except BaseException:
                log.exception("worker_crashed", worker=index)
            finally:
                os._exit(status)
        children[pid] = (index, time.monotonic())
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if signum == signal.SIGHUP and reload is not None and not stopping:
            reload(os.path.join(peers_dir, SNAPSHOT))
        if signum != signal.SIGHUP and not stopping:
            stopping = True
            for sock in sockets:  # new connections are refused, not queued for nobody
                sock.close()
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):  # (reaped, not yet forgotten)
                os.kill(pid, signum)

    for signum in FORWARDED:
        signal.signal(signum, forward)
    for index in range(count):
        spawn(index)
    log.info("workers_started", workers=count, pids=list(children),
             port=sockets[0].getsockname()[1])  # fmt: skip
    status = 0
    while children:
        try:
            pid, wait_status = os.wait()
        except ChildProcessError:
            break
        if pid not in children:
            continue
        index, started = children.pop(pid)
        code = os.waitstatus_to_exitcode(wait_status)
        if stopping:
            status = status or (code if code > 0 else 0)
            continue
        shared.forget(index)
        if code > 0 and time.monotonic() - started < EARLY_EXIT_S:
            log.error("worker_failed_at_start", worker=index, exit=code)
            status = code if code > 0 else 1
            forward(signal.SIGTERM, None)
            continue
        log.error("worker_exited", worker=index, exit=code, restarting=True)
        spawn(index)
    shutil.rmtree(peers_dir, ignore_errors=True)
    log.info("workers_stopped", exit=status)
    return status
