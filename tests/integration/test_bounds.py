"""What a client can exhaust is bounded: slow or silent connections hold no compile
slot, a thousand idle ones leave real work alone, and LZO bombs inflate off the
event loop within a budget."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import compile_remote
from tests.support.distcc import run_distcc
from tests.support.secrets import farm_secret
from tests.support.servers import (
    BalancerProcess,
    ServerProcess,
    StartBalancer,
    StartServer,
    wait_until,
)
from wire import Reply, Request, encode_request, lzo, tokens

pytestmark = pytest.mark.integration

IDLE = 1000
ATTACKER = "127.0.0.2"  # loopback too: the whole of 127/8 is local on Linux
BOMB_SOURCE_BYTES = 200 * 1024 * 1024


def _open_idle(port: int, count: int) -> list[socket.socket]:
    """``count`` connections from ATTACKER that never send a byte (those the server
    refuses are closed by it; their sockets here just see EOF)."""
    held = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind((ATTACKER, 0))
        sock.connect(("127.0.0.1", port))
        held.append(sock)
    return held


@pytest.fixture
def enough_fds() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 3 * IDLE + 256)), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _fds_of(pid: int) -> tuple[int, int]:
    """(open file descriptors, soft limit) of a process."""
    count = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/limits") as limits:
        line = next(x for x in limits if x.startswith("Max open files"))
    return count, int(line.split()[3])


def _hello(tmp: Path) -> None:
    (tmp / "hello.c").write_text("int main(void) { return 0; }\n")


def test_slow_loris_connections_hold_no_compile_slot(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server("--jobs", "2", "--io-timeout", "60")
    header = tokens.encode(b"DIST", 1) + tokens.encode(b"ARGC", 3)  # ... and then nothing
    lorises = []
    for _ in range(2):
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(header)
        lorises.append(sock)
    try:
        wait_until(lambda: server.status()["connections"]["open"] == 2, 10, "both connected")
        assert server.status()["busy"] == 0
        _hello(tmp_path)
        result = run_distcc(["gcc", "-c", "hello.c", "-o", "hello.o"],
                            hosts=f"127.0.0.1:{server.port}", cwd=tmp_path)  # fmt: skip
        assert result.returncode == 0, result.stderr  # fallback is off: it compiled remotely
        counters = server.counters()
        assert counters["ok"] == 1 and counters["rejected_busy"] == 0
    finally:
        for sock in lorises:
            sock.close()


@pytest.mark.parametrize("role", ["server", "balancer"])
def test_a_thousand_idle_connections_leave_real_work_alone(
    start_server: StartServer,
    start_balancer: StartBalancer,
    tmp_path: Path,
    enough_fds: None,
    role: str,
) -> None:
    server = start_server("--jobs", "2", "--allow", "127.0.0.0/8")
    target: ServerProcess = server
    if role == "balancer":
        target = start_balancer(
            "--backend", f"127.0.0.1:{server.port},status={server.stats_port}",
            "--allow", "127.0.0.0/8",
        )  # fmt: skip
        assert isinstance(target, BalancerProcess)
        target.wait_healthy(1)
    idle = _open_idle(target.port, IDLE)
    try:
        wait_until(lambda: target.status()["connections"]["open"] >= 512, 20, "the flood seen")
        count, limit = _fds_of(target.proc.pid)
        assert count < limit, "the daemon ran out of file descriptors"
        _hello(tmp_path)
        result = run_distcc(["gcc", "-c", "hello.c", "-o", "hello.o"],
                            hosts=f"127.0.0.1:{target.port}", cwd=tmp_path)  # fmt: skip
        assert result.returncode == 0, result.stderr
        status = target.status()
        counters = status["counters"] if role == "server" else status["totals"]
        assert counters["ok"] >= 1
        assert counters["rejected_connections"] == IDLE - 512  # the per-address cap
        assert target.logged("turned_away")
    finally:
        for sock in idle:
            sock.close()
    wait_until(lambda: target.status()["connections"]["open"] == 0, 20, "the idle ones gone")


def _bomb() -> bytes:
    """A protocol 2 request of 1 MB that inflates to 200 MiB (argv the judge refuses:
    the source is inflated before anything is judged)."""
    argv = ("gcc", "-fplugin=bomb.so", "-c", "bomb.c", "-o", "bomb.o")
    return encode_request(Request(2, argv, b"\0" * BOMB_SOURCE_BYTES))


async def _send_bombs(port: int, bomb: bytes, count: int) -> list[asyncio.StreamReader]:
    readers = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(bomb)
        await writer.drain()
        readers.append(reader)
    return readers


@pytest.mark.parametrize("role", ["server", "balancer"])
def test_lzo_bombs_inflate_off_the_loop_and_leave_the_backends_in_rotation(
    start_server: StartServer, start_balancer: StartBalancer, role: str
) -> None:
    """Three at once, with room to inflate one at a time: while they inflate, the status
    page answers, and says so (before, inflating ran on the event loop, and nothing
    could answer until it was over)."""
    server = start_server("--jobs", "2", "--max-inflating-mb", "210")
    target: ServerProcess = server
    if role == "balancer":
        target = start_balancer(
            "--backend", f"127.0.0.1:{server.port},status={server.stats_port}",
            "--max-inflating-mb", "210", "--probe-timeout", "1", "--poll-interval", "0.2",
        )  # fmt: skip
        assert isinstance(target, BalancerProcess)
        target.wait_healthy(1)
    bomb = _bomb()
    assert len(bomb) < 2 * 1024 * 1024

    async def scenario() -> list[dict[str, int]]:
        readers = await _send_bombs(target.port, bomb, 3)
        seen = []
        # While the three inflate, the status page answers, and tells of them.
        for _ in range(3):
            status = await asyncio.to_thread(target.status)
            seen.append(status["inflating"])
        for reader in readers:
            with contextlib.suppress(ConnectionError):
                await asyncio.wait_for(reader.read(), 60)
        return seen

    seen = asyncio.run(scenario())
    assert any(s["bytes"] > 0 or s["waiting"] > 0 for s in seen), seen
    wait_until(lambda: target.status()["inflating"]["bytes"] == 0, 30, "the bombs done")
    assert target.status()["inflating"]["waited"] >= 1  # the budget made some wait
    if role == "balancer":
        with urllib.request.urlopen(f"http://127.0.0.1:{target.stats_port}/healthz") as r:
            assert r.status == 200
        assert isinstance(target, BalancerProcess)
        backend = target.backend(f"127.0.0.1:{server.port}")
        assert backend["state"] == "up" and backend["failures"] == 0, backend
    counters = target.status()["counters" if role == "server" else "totals"]
    assert counters["rejected_policy"] == 3


def _connect_from(source: str, port: int) -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    return sock


def _closed_unanswered(sock: socket.socket) -> bool:
    """Whether the peer closes ``sock`` without a byte (we wait for it, up to the
    socket's timeout: a connection left open fails the test)."""
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True


@pytest.mark.parametrize("role", ["server", "balancer"])
def test_the_http_port_refuses_outsiders_at_accept_caps_and_closes_idle_connections(
    start_server: StartServer, start_balancer: StartBalancer, role: str
) -> None:
    """The stats port (server) and the admin port (balancer): aiohttp kept a connection
    that never sent a request for an hour, also from outside the allowlist (answered
    403 once it asked), and took any number: 4,300 used every descriptor and the
    compile port stopped accepting. Now an outsider is closed before anything of it is
    read, one address holds at most its cap, and idle connections are closed."""
    bounds = ("--max-http-connections-per-address", "4", "--http-idle-timeout", "5")
    if role == "server":
        target = start_server("--jobs", "1", *bounds, "--status-allow", "127.0.0.1/32",
                              "--status-allow", "127.0.0.3/32")  # fmt: skip
    else:
        server = start_server("--jobs", "1")
        target = start_balancer(
            "--backend", f"127.0.0.1:{server.port},status={server.stats_port}", *bounds,
            "--admin-allow", "127.0.0.1/32", "--admin-allow", "127.0.0.3/32",
        )  # fmt: skip
        assert isinstance(target, BalancerProcess)
        target.wait_healthy(1)
    port = target.stats_port
    outsider = _connect_from(ATTACKER, port)
    with contextlib.suppress(ConnectionError):
        outsider.sendall(b"GET /status HTTP/1.0\r\n\r\n")
    assert _closed_unanswered(outsider), "an outsider was answered (or kept)"
    outsider.close()
    assert target.logged("http_refused")["reason"] == "address not allowed"

    held = [_connect_from("127.0.0.3", port) for _ in range(4)]  # one address's cap
    try:
        wait_until(lambda: target.status()["http_connections"]["addresses"] == 2, 10,
                   "the four held (and a status request) counted")  # fmt: skip
        fifth = _connect_from("127.0.0.3", port)
        assert _closed_unanswered(fifth), "a fifth connection from one address was kept"
        fifth.close()
        for sock in held:  # idle: closed by the server after --http-idle-timeout
            assert _closed_unanswered(sock), "an idle connection was kept"
    finally:
        for sock in held:
            sock.close()
    http = target.status()["http_connections"]
    assert http["refused"] == 2 and http["max_per_address"] == 4
    request = Request(1, ("gcc", "-c", "x.c", "-o", "x.o"), b"int x;\n")
    reply = asyncio.run(compile_remote("127.0.0.1", target.port, request, timeout_s=60))
    assert reply.status == 0  # the compile port, too, still serves


SOURCE_MB = 6
BIG_OBJECT_MB = 8


def _inflated_sources_are_held_within_the_budget(
    start_server: StartServer, start_balancer: StartBalancer, bin_dir: Path
) -> None:
    """Five LZO requests whose 6 MiB sources inflate within --max-inflating-mb 20: their
    jobs wait at the backend (gate-cc) while the balancer holds their sources, so three
    are held and counted, and two wait to inflate (before, a source was counted only
    while it inflated: eight requests of 1.2 MB grew the balancer by 1.6 GB)."""
    server = start_server("--jobs", "5", "--compiler", "gate-cc", "--compiler", "gcc",
                          path_prepend=str(bin_dir))  # fmt: skip
    balancer = start_balancer(
        "--backend", f"127.0.0.1:{server.port},status={server.stats_port}",
        "--allow-compiler", "gate-cc", "--max-inflating-mb", "20", "--max-source-mb", "8",
        "--queue-timeout", "60",
    )  # fmt: skip
    balancer.wait_healthy(1)
    source = b"/*" + b" " * (SOURCE_MB * 1024 * 1024 - 14) + b"*/ int x;\n"
    request = Request(2, ("gate-cc", "-c", "big.c", "-o", "big.o"), source)

    async def scenario() -> tuple[dict[str, int], list[int]]:
        jobs = [
            asyncio.create_task(compile_remote("127.0.0.1", balancer.port, request, timeout_s=120))
            for _ in range(5)
        ]
        try:
            await asyncio.to_thread(
                wait_until, lambda: server.status()["busy"] >= 3, 60, "three jobs at the backend"
            )
            held = (await asyncio.to_thread(balancer.status))["inflating"]
        finally:
            (bin_dir / "gate-cc.open").touch()
        return held, [(await job).status for job in jobs]

    held, statuses = asyncio.run(scenario())
    assert held["waiting"] == 2, held
    assert 3 * len(source) <= held["bytes"] <= 20 * 1024 * 1024, held
    assert statuses == [0] * 5
    wait_until(lambda: balancer.status()["inflating"]["bytes"] == 0, 10, "every source given back")


def _unread_replies_are_held_within_the_budget(
    start_server: StartServer, start_balancer: StartBalancer
) -> None:
    """A client that never reads holds its 8 MiB reply within --reply-memory-mb 20; the
    next such reply does not fit, and its client is closed unanswered (it compiles
    locally) with the reason logged; once the first goes, replies flow again (before,
    replies waited for such clients without a bound: six of them grew the balancer by
    1.9 GB)."""
    server = start_server("--jobs", "2")
    balancer = start_balancer(
        "--backend", f"127.0.0.1:{server.port},status={server.stats_port}",
        "--reply-memory-mb", "20",
    )  # fmt: skip
    balancer.wait_healthy(1)
    source = b'__asm__(".data\\n.fill %d,1,0\\n.text");\nint x;\n' % (BIG_OBJECT_MB << 20)
    job = encode_request(Request(1, ("gcc", "-c", "big.c", "-o", "big.o"), source))

    def never_reading() -> socket.socket:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # (before connecting)
        sock.settimeout(60)
        sock.connect(("127.0.0.1", balancer.port))
        sock.sendall(job)
        return sock

    first = never_reading()
    try:
        wait_until(lambda: balancer.status()["reply_memory"]["bytes"] > 0, 60, "a reply held")
        second = never_reading()
        with second:
            assert _closed_unanswered(second), "a reply past the budget was held"
        refused = balancer.logged("job_done")
        assert refused["outcome"] == "reply_refused" and "--reply-memory-mb" in refused["reason"]
        memory = balancer.status()["reply_memory"]
        assert 0 < memory["bytes"] <= 20 * 1024 * 1024 and memory["refused"] == 1, memory
    finally:
        first.close()
    wait_until(lambda: balancer.status()["reply_memory"]["bytes"] == 0, 60, "the reply dropped")
    reply = asyncio.run(compile_remote(
        "127.0.0.1", balancer.port, Request(1, ("gcc", "-c", "big.c", "-o", "big.o"), source),
        timeout_s=60,
    ))  # fmt: skip
    assert reply.status == 0 and len(reply.obj) > BIG_OBJECT_MB << 20
    assert balancer.totals()["reply_refused"] == 1


@pytest.mark.parametrize("held", ["inflated sources", "unread replies"])
def test_what_the_balancer_holds_for_its_clients_is_budgeted(
    start_server: StartServer,
    start_balancer: StartBalancer,
    fake_compilers: tuple[Path, Path],
    held: str,
) -> None:
    if held == "inflated sources":
        _inflated_sources_are_held_within_the_budget(
            start_server, start_balancer, fake_compilers[0]
        )
    else:
        _unread_replies_are_held_within_the_budget(start_server, start_balancer)


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(x for x in status if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def test_plain_sources_are_read_within_the_request_memory_budget(
    start_server: StartServer,
) -> None:
    """Three plain requests of 24 MiB whose last byte is held back, with room for one
    (--request-memory-mb 32): the server reads one and leaves the others unread (it
    buffered each, up to 256 MiB per connection, with no total bound: +200 MB a
    connection), then reads each as the one before is done."""
    # (generous timeouts: the two held back wait on the first, which a loaded machine
    # once took a minute to read and compile; the test is about memory, not time)
    server = start_server("--jobs", "2", "--request-memory-mb", "32", "--max-source-mb", "32",
                          "--io-timeout", "600", "--request-timeout", "900")  # fmt: skip
    body = b"/*" + b" " * (24 * 1024 * 1024 - 14) + b"*/ int x;\n"
    wire = encode_request(Request(1, ("gcc", "-c", "big.c", "-o", "big.o"), body))
    before = _rss_mib(server.proc.pid)
    socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
    # Each sends all but the last byte, in a thread of its own (the server reads one).
    senders = [threading.Thread(target=sock.sendall, args=(wire[:-1],)) for sock in socks]
    try:
        for sender in senders:
            sender.start()
        senders[0].join(60)

        def read_one_left_two() -> dict[str, int] | None:
            memory: dict[str, int] = server.status()["request_memory"]
            grown = _rss_mib(server.proc.pid) - before
            return memory if memory["waiting"] == 2 and grown >= 20 else None

        memory = wait_until(read_one_left_two, 30, "one source read, two waiting")
        assert len(body) <= memory["bytes"] <= 32 * 1024 * 1024, memory
        assert _rss_mib(server.proc.pid) - before < 2 * 24, "an unread source was buffered"
        for sock, sender in zip(socks, senders, strict=True):
            sender.join(60)  # (once the one before it is done, it is read)
            sock.sendall(wire[-1:])
            sock.settimeout(60)
            assert sock.recv(24).startswith(b"DONE00000001STAT00000000")
            sock.close()
    finally:
        for sock in socks:
            sock.close()
    wait_until(lambda: server.status()["request_memory"]["bytes"] == 0, 10, "all given back")
    assert server.counters()["ok"] == 3


def test_a_large_lzo_reply_is_inflated_off_the_event_loop(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A balancer reads its backends' replies with client.compile_remote, which inflated
    an LZO reply in its parser, on the event loop: a 1 MB reply inflating to 256 MiB
    held the balancer's loop 1.3 s (/healthz stalled). Here the inflating of a real
    server's 32 MiB object is held until the loop has run on a few times: inflated on
    the loop, it would wait in vain (the loop cannot run while it waits)."""
    server = start_server("--jobs", "1")
    real = lzo.decompress
    ticks = [0]
    armed: list[int] = []
    loop_ran = threading.Event()
    ran_meanwhile: list[bool] = []

    def held(data: bytes, max_size: int, field: str = "body") -> bytes:
        if field == "DOTO":
            armed.append(ticks[0])
            ran_meanwhile.append(loop_ran.wait(30))
        return real(data, max_size, field)

    monkeypatch.setattr(lzo, "decompress", held)
    source = b'__asm__(".data\\n.fill %d,1,0\\n.text");\nint z;\n' % (32 << 20)
    request = Request(2, ("gcc", "-c", "z.c", "-o", "z.o"), source)

    async def scenario() -> Reply:
        async def count_loop_turns() -> None:
            while True:
                if armed and ticks[0] > armed[0] + 3:
                    loop_ran.set()
                ticks[0] += 1
                await asyncio.sleep(0)

        counting = asyncio.create_task(count_loop_turns())
        try:
            return await compile_remote("127.0.0.1", server.port, request, timeout_s=120)
        finally:
            counting.cancel()

    reply = asyncio.run(scenario())
    assert ran_meanwhile == [True], "the reply was inflated on the event loop"
    assert reply.status == 0 and len(reply.obj) > 32 << 20


def test_the_bytes_a_balancers_attempts_send_are_one_copy_counted_in_the_budget(
    start_server: StartServer,
    start_balancer: StartBalancer,
    fake_compilers: tuple[Path, Path],
) -> None:
    """Every attempt of a job (the first, a late hedge) sends the same encoded request:
    one copy, held in --request-memory-mb with the request it was made from (a review
    saw each attempt hold a copy of its own, outside the budget: 4x what it counted)."""
    bin_dir, _ = fake_compilers
    servers = [start_server("--jobs", "1", "--compiler", "hang-cc", "--compiler", "gcc",
                            path_prepend=str(bin_dir))
               for _ in range(2)]  # fmt: skip
    balancer = start_balancer(
        *(a for s in servers for a in ("--backend", f"127.0.0.1:{s.port},status={s.stats_port}")),
        "--hedge-after", "0.5", "--tail-hedge", "0", "--max-hedges", "1",
    )  # fmt: skip
    balancer.wait_healthy(2)
    size = 8 << 20
    source = b"/*" + b"x" * size + b"*/\nint h;\n"
    sock = socket.create_connection(("127.0.0.1", balancer.port), timeout=60)
    with sock:
        sock.sendall(encode_request(Request(1, ("hang-cc", "-c", "h.c", "-o", "h.o"), source)))
        wait_until(lambda: balancer.totals()["hedges"] >= 1, 60, "the job hedged")
        held = balancer.status()["request_memory"]["bytes"]
        # the request as read and its encoding: two copies of the source, not three
        assert 2 * size <= held < 3 * size, held


@pytest.mark.parametrize("daemon", ["server", "balancer"])
def test_a_connection_that_sends_nothing_is_closed_after_the_first_byte_timeout(
    start_server: StartServer, start_balancer: StartBalancer, daemon: str
) -> None:
    """Idle connections held every connection place for --io-timeout (60 s); one that
    sends nothing is closed after --first-byte-timeout, with its reason logged."""
    server = start_server("--jobs", "1", "--first-byte-timeout", "1", "--io-timeout", "300")
    target: ServerProcess = server
    if daemon == "balancer":
        target = start_balancer("--backend", f"127.0.0.1:{server.port}",
                                "--first-byte-timeout", "1", "--io-timeout", "300")  # fmt: skip
    with socket.create_connection(("127.0.0.1", target.port), timeout=60) as idle:
        assert idle.recv(1) == b""  # closed by the daemon (the socket's own 60 s are far)
    assert target.logged("bad_request")["reason"] == "request not received in time"


@pytest.mark.parametrize("daemon", ["server", "balancer"])
def test_room_held_for_a_claimed_source_must_be_earned_by_its_bytes(
    start_server: StartServer, start_balancer: StartBalancer, daemon: str
) -> None:
    """A request that claims a 20 MiB source and then trickles holds the room reserved
    for it only while its bytes come at the earning rate (wire.stream.EARN_RATE_BYTES_S,
    after a grace): then it is given up, and a real request that needed that room is
    read and compiled. (A review's nine connections of 80 bytes each, a byte every 20 s,
    held a balancer's request budget until the request timeout.)"""
    server = start_server("--jobs", "2", "--request-memory-mb", "32", "--max-source-mb", "32")
    target: ServerProcess = server
    if daemon == "balancer":
        target = start_balancer("--backend", f"127.0.0.1:{server.port},status={server.stats_port}",
                                "--request-memory-mb", "32", "--max-source-mb", "32")  # fmt: skip
        target.wait_healthy(1)
    claimed = encode_request(Request(1, ("gcc", "-c", "a.c", "-o", "a.o"), b" " * (20 << 20)))
    trickle = claimed[: claimed.index(b"DOTI") + 12 + 1]  # the header and one byte
    body = b"/*" + b" " * (16 * 1024 * 1024) + b"*/ int x;\n"
    real = encode_request(Request(1, ("gcc", "-c", "big.c", "-o", "big.o"), body))
    with socket.create_connection(("127.0.0.1", target.port)) as attacker:
        attacker.sendall(trickle)
        wait_until(lambda: target.status()["request_memory"]["bytes"] >= 20 << 20, 10,
                   "the claimed room held")  # fmt: skip
        with socket.create_connection(("127.0.0.1", target.port)) as sock:
            sock.settimeout(60)
            sender = threading.Thread(target=sock.sendall, args=(real,))
            sender.start()
            # (waits for room: the claim holds 20 of 32 MiB)
            wait_until(lambda: target.status()["request_memory"]["waiting"] == 1, 10,
                       "the real request waiting for room")  # fmt: skip
            slow = wait_until(
                lambda: [e for e in target.events("bad_request") if "slower than" in e["reason"]],
                30, "the trickling request given up",
            )  # fmt: skip
            assert "MiB/s" in slow[0]["reason"]
            attacker.settimeout(10)
            assert attacker.recv(1) == b"", "the trickling connection is closed"
            sender.join(60)
            assert sock.recv(24).startswith(b"DONE00000001STAT00000000")
    wait_until(lambda: target.status()["request_memory"]["bytes"] == 0, 10, "all given back")


def test_a_servers_cached_replies_are_held_within_the_reply_budget(
    start_server: StartServer, tmp_path: Path
) -> None:
    """Replies from a server's --cache-dir wait for slow readers within
    --reply-memory-mb like compiled ones: a hit that does not fit is compiled instead,
    in a slot (a review's 12 connections that never read a cached 40 MB object held
    800 MB, counted nowhere)."""
    cache_dir = tmp_path / "cache"
    server = start_server("--jobs", "1", "--reply-memory-mb", "20", "--cache-dir", str(cache_dir),
                          "--cache-secret-file", str(farm_secret()))  # fmt: skip
    # (a leading marker: a text without one is never cached)
    big = b'__asm__(".data\\n.fill %d,1,0\\n.text");\nint x;\n' % (BIG_OBJECT_MB << 20)
    source = b'# 0 "big.c"\n' + big
    request = Request(1, ("gcc", "-c", "big.c", "-o", "big.o"), source)
    reply = asyncio.run(compile_remote("127.0.0.1", server.port, request, timeout_s=60))
    assert reply.status == 0  # (compiled, and stored)
    wait_until(lambda: server.status()["cache"]["stored"] == 1, 30, "the entry stored")
    readers = []
    try:
        for _ in range(3):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # (before connecting)
            sock.connect(("127.0.0.1", server.port))
            sock.sendall(encode_request(request))
            readers.append(sock)
        # Two hits of 8 MiB fit in 20 MiB; the third is compiled in the one slot, whose
        # reply waits in it.
        wait_until(lambda: server.status()["reply_memory"]["bytes"] >= 2 * (8 << 20),
                   60, "two cached replies held")  # fmt: skip
        wait_until(lambda: server.events("cache_hit_not_held"), 60, "the third hit not held")
        assert server.status()["reply_memory"]["bytes"] <= 20 << 20
    finally:
        for sock in readers:
            sock.close()
    wait_until(lambda: server.status()["reply_memory"]["bytes"] == 0, 60, "all dropped")
