"""Protocol 3 (pump mode) on the wire, and wire.pump's check of what a request may make.

The bytes follow distcc 3.4's client (clirpc.c ``dcc_x_many_files``, ``dcc_x_cwd``):
``DIST 3``, ``CDIR``, the argv, ``NFIL`` and each file's ``NAME`` then ``FILE`` (LZO) or
``LINK``. Every tree the check accepts is made for real on disk in the property test, and
every link of it is resolved by the kernel: the check's lexical walk must agree with it.
"""

from __future__ import annotations

import asyncio
import json
import os
import posixpath
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wire import LimitExceeded, Limits, RemoteProtocolError, Reply, ReplyReader, RequestReader
from wire import lzo as wire_lzo
from wire.events import PumpEntry, PumpRequest
from wire.pump import (
    MARKER,
    MAX_DEPTH,
    MAX_DIRECTORIES,
    MAX_TOPS,
    Tree,
    TreeRefused,
    check_tree,
    system_shaped,
)
from wire.stream import inflate_pump
from wire.tokens import encode
from wire.writer import encode_pump_request, encode_reply

SYSTEM = ("/usr/include", "/usr/lib/gcc/x86_64-linux-gnu/12/include")
RESERVED = ("usr", "bin", "lib", "lib64", "etc", "dev", "proc", "sys")
UPS = "../" * 24


def system_link(directory: str) -> PumpEntry:
    return PumpEntry(directory, link=UPS + directory[1:])


REAL = PumpRequest(
    protocol=3,
    cwd="/home/ann/proj/build",
    argv=("gcc", "-I../include", "-c", "../src/main.c", "-o", "main.o"),
    entries=(
        PumpEntry("/home/ann/proj/src/main.c", body=b'#include "util.h"\nint main(void){}\n'),
        PumpEntry("/home/ann/proj/include/util.h", body=b"int util(void);\n" * 50),
        PumpEntry("/home/ann/proj/include/alias.h", link="util.h"),
        PumpEntry(f"/home/ann/proj/build/{MARKER}", body=b""),
        system_link("/usr/include"),
        system_link("/usr/lib/gcc/x86_64-linux-gnu/12/include"),
    ),
)


def parsed(data: bytes, limits: Limits | None = None, *, defer: bool = False) -> object:
    reader = RequestReader(limits, defer_decompression=defer)
    reader.feed(data)
    return reader.next_event()


def inflate_entries(request: PumpRequest, limits: Limits) -> PumpRequest:
    async def inflate(data: bytes, most: int) -> bytes:
        return wire_lzo.decompress(data, most, "FILE")

    return asyncio.run(inflate_pump(request, limits, inflate))


def check(request: PumpRequest) -> Tree:
    return check_tree(request, system_dirs=SYSTEM, reserved_tops=RESERVED)


# --- the wire ---------------------------------------------------------------


def test_a_pump_request_round_trips_in_distccs_order() -> None:
    data = encode_pump_request(REAL)

    assert data.startswith(b"DIST00000003CDIR00000014/home/ann/proj/buildARGC00000006")
    assert parsed(data) == REAL


def test_a_pump_request_split_byte_by_byte_parses_the_same() -> None:
    data = encode_pump_request(REAL)
    reader = RequestReader()
    for i in range(len(data)):
        reader.feed(data[i : i + 1])
        event = reader.next_event()
    assert event == REAL


def test_deferred_bodies_stay_compressed_until_inflated_within_the_budget() -> None:
    data = encode_pump_request(REAL)

    deferred = parsed(data, defer=True)

    assert isinstance(deferred, PumpRequest) and deferred.compressed
    assert deferred.entries[1].body != REAL.entries[1].body
    assert inflate_entries(deferred, Limits()) == REAL


def test_a_million_files_are_refused_from_the_count_alone() -> None:
    head = encode_pump_request(PumpRequest(3, "/w", ("gcc", "-c", "a.c"), ()))
    data = head[: -len(encode(b"NFIL", 0))] + encode(b"NFIL", 1_000_000)

    with pytest.raises(LimitExceeded) as refused:
        parsed(data)

    assert (refused.value.field, refused.value.limit) == ("NFIL", 20_000)


@pytest.mark.parametrize("defer", [False, True], ids=["inflated", "deferred"])
def test_an_lzo_bomb_stops_at_the_requests_budget(defer: bool) -> None:
    bomb = b"\0" * (4 * 1024 * 1024)
    request = PumpRequest(3, "/w", ("gcc", "-c", "a.c"), (PumpEntry("/w/a.c", body=bomb),))
    limits = Limits(max_pump_bytes=1024 * 1024)
    data = encode_pump_request(request)
    assert len(data) < 64 * 1024  # (a few KB that would inflate to 4 MiB)

    with pytest.raises(LimitExceeded, match="decompressed"):
        event = parsed(data, limits, defer=defer)
        assert isinstance(event, PumpRequest)
        inflate_entries(event, limits)


def test_the_budget_is_for_all_files_together() -> None:
    body = b"x" * 600
    entries = tuple(PumpEntry(f"/w/{i}.h", body=body) for i in range(4))
    data = encode_pump_request(PumpRequest(3, "/w", ("gcc", "-c", "a.c"), entries))
    limits = Limits(max_pump_bytes=2000)

    with pytest.raises(LimitExceeded):
        parsed(data, limits)
    deferred = parsed(data, limits, defer=True)
    assert isinstance(deferred, PumpRequest)
    with pytest.raises(LimitExceeded):
        inflate_entries(deferred, limits)


@pytest.mark.parametrize("token", [b"CDIR", b"NAME", b"LINK"])
def test_paths_are_bounded_and_free_of_nul(token: bytes) -> None:
    limits = Limits(max_path_bytes=64)
    long, nul = "/" + "a" * 80, "/a\0b"

    def request(path: str) -> bytes:
        cwd = path if token == b"CDIR" else "/w"
        name = path if token == b"NAME" else "/w/x"
        entry = PumpEntry(name, link=path if token == b"LINK" else "y")
        return bytes(encode_pump_request(PumpRequest(3, cwd, ("gcc",), (entry,))))

    with pytest.raises(LimitExceeded):
        parsed(request(long), limits)
    data = request("/a_b").replace(b"/a_b", nul.encode())
    with pytest.raises(RemoteProtocolError, match="NUL"):
        parsed(data, limits)


def test_a_file_token_other_than_file_or_link_is_a_protocol_error() -> None:
    data = encode_pump_request(REAL).replace(b"LINK", b"DOTI", 1)

    with pytest.raises(RemoteProtocolError, match="FILE"):
        parsed(data)


def test_a_pump_reply_carries_the_dependency_file_only_on_success() -> None:
    good = Reply(3, 0, b"warning\n", b"", b"\x7fELF object", b"main.o: ../src/main.c\n")
    failed = Reply(3, 1 << 8, b"error\n", b"", b"", b"ignored")

    for reply, deps in ((good, good.deps), (failed, b"")):
        data = encode_reply(reply)
        assert (b"DOTD" in data) is bool(deps)
        reader = ReplyReader(3)
        reader.feed(data)
        got = reader.next_event()
        assert (
            isinstance(got, Reply)
            and got.deps == deps
            and got.obj == reply.obj * (reply.status == 0)
        )
        assert reader.trailing == b""


# --- what a request may make ------------------------------------------------


def test_a_real_shaped_request_makes_its_tree() -> None:
    tree = check(REAL)

    assert tree.cwd == "/home/ann/proj/build"
    assert dict(tree.files).keys() == {"/home/ann/proj/src/main.c", "/home/ann/proj/include/util.h"}
    assert tree.links == (("/home/ann/proj/include/alias.h", "util.h"),)
    assert tree.system_links == SYSTEM
    assert tree.tops == ("home",)
    assert "/home/ann/proj/build" in tree.directories
    assert list(tree.directories) == sorted(tree.directories, key=lambda d: (d.count("/"), d))
    assert tree.visible("/home/ann/x") and tree.in_system_dirs("/usr/include/stdio.h")
    assert not tree.visible("/etc/passwd") and not tree.in_system_dirs("/usr/share/doc")
    assert not tree.visible("/usr/include/stdio.h") and not tree.in_system_dirs("/home/ann")
    assert tree.names == {*dict(tree.files), "/home/ann/proj/include/alias.h"}


def with_entries(*entries: PumpEntry, cwd: str = "/home/ann/proj") -> PumpRequest:
    base = (PumpEntry("/home/ann/proj/a.c", body=b"int a;\n"),)
    return PumpRequest(3, cwd, ("gcc", "-c", "a.c"), base + entries)


HOSTILE = {
    "relative name": with_entries(PumpEntry("home/ann/x.h", body=b"")),
    "dot-dot in a name": with_entries(PumpEntry("/home/ann/../../etc/cron.d/x", body=b"x")),
    "dot in a name": with_entries(PumpEntry("/home/./ann/x.h", body=b"x")),
    "empty component": with_entries(PumpEntry("/home//ann/x.h", body=b"x")),
    "trailing slash": with_entries(PumpEntry("/home/ann/x/", body=b"x")),
    "the root": with_entries(PumpEntry("/", body=b"x")),
    "sent twice": with_entries(PumpEntry("/home/ann/proj/a.c", body=b"int b;\n")),
    "a system header's name": with_entries(PumpEntry("/usr/include/stdio.h", body=b"x")),
    "the dynamic loader's cache": with_entries(PumpEntry("/etc/ld.so.cache", body=b"x")),
    "absolute link out": with_entries(PumpEntry("/home/ann/proj/x.h", link="/etc/passwd")),
    "relative link out": with_entries(PumpEntry("/home/ann/proj/x.h", link="../../../etc/passwd")),
    "link to the root": with_entries(PumpEntry("/home/ann/proj/x.h", link="../../..")),
    "link chain": with_entries(
        PumpEntry("/home/ann/proj/x.h", link="a.c"), PumpEntry("/home/ann/proj/y.h", link="x.h")
    ),
    "link through a link": with_entries(
        PumpEntry("/home/ann/proj/d", link="/home/ann"),
        PumpEntry("/home/ann/proj/y.h", link="d/proj/a.c"),
    ),
    "link to something not sent": with_entries(PumpEntry("/home/ann/proj/x.h", link="b.c")),
    "empty link": with_entries(PumpEntry("/home/ann/proj/x.h", link="")),
    "system shape, not searched": with_entries(system_link("/usr/share/doc")),
    "system shape, too few ups": with_entries(
        PumpEntry(SYSTEM[1], link="../../" + SYSTEM[1][1:])  # (lands in /usr/lib/usr/lib/...)
    ),
    "file and directory": with_entries(
        PumpEntry("/home/ann/proj/x", body=b"x"), PumpEntry("/home/ann/proj/x/y.h", body=b"x")
    ),
    "a file under a written link": with_entries(
        PumpEntry("/home/ann/proj/inc", link="."), PumpEntry("/home/ann/proj/inc/y.h", body=b"")
    ),
    "a link at the root (review 18)": with_entries(
        PumpEntry("/hosttmp", link="/tmp"), PumpEntry("/tmp/dummy.h", body=b"")
    ),
    "a link named /tmp": with_entries(PumpEntry("/tmp", link="home")),
    "a file at the root": with_entries(PumpEntry("/x.h", body=b"")),
    "a marker at the root": with_entries(PumpEntry("/" + MARKER, body=b"")),
    "a component over NAME_MAX": with_entries(PumpEntry("/home/" + "c" * 256 + "/h.h", body=b"")),
    "a name over 3072 bytes": with_entries(
        PumpEntry("/home/" + "/".join(["c" * 200] * 16), body=b"")
    ),
    "working directory in /etc": with_entries(cwd="/etc"),
    "working directory relative": with_entries(cwd="proj"),
}


def test_a_tree_is_bounded_in_depth_directories_and_top_level_names() -> None:
    deep = "/" + "/".join(["d"] * (MAX_DEPTH + 1))
    wide = [PumpEntry(f"/home/d{i}/d{j}/x.h", body=b"") for i in range(300) for j in range(220)]
    tops = [PumpEntry(f"/top{i}/x.h", body=b"") for i in range(MAX_TOPS + 1)]
    for entries, said in (([PumpEntry(deep, body=b"")], "deep"),
                          (wide, "directories"), (tops, "top-level")):  # fmt: skip
        with pytest.raises(TreeRefused, match=said):
            check(PumpRequest(3, "/home", ("gcc",), tuple(entries)))
    assert len(wide) * 1 > MAX_DIRECTORIES > 300  # (the wide one makes 66,301)


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_request_is_refused_with_its_reason(name: str) -> None:
    with pytest.raises(TreeRefused) as refused:
        check(HOSTILE[name])

    assert str(refused.value)


def test_nothing_is_made_at_or_under_a_toolchain_mount_but_above_it_is_fine() -> None:
    mounts = ("/opt/gcc-13", "/srv/specs")
    above = with_entries(PumpEntry("/opt/project/a.h", body=b""), cwd="/srv")
    tree = check_tree(above, system_dirs=SYSTEM, reserved_tops=RESERVED, reserved_paths=mounts)
    assert {"opt", "srv"} <= set(tree.tops)
    for entry in (PumpEntry("/opt/gcc-13/include/x.h", body=b""),
                  PumpEntry("/srv/specs", link="/home/ann/proj/a.c")):  # fmt: skip
        with pytest.raises(TreeRefused, match="the server's own"):
            check_tree(with_entries(entry), system_dirs=SYSTEM, reserved_tops=RESERVED,
                       reserved_paths=mounts)  # fmt: skip


def test_the_system_shape_is_exactly_ups_then_the_same_path() -> None:
    assert system_shaped("/usr/include", UPS + "usr/include")
    assert system_shaped("/usr/include", "../usr/include")
    assert not system_shaped("/usr/include", "../usr/include/../../etc")
    assert not system_shaped("/usr/include", UPS + "etc")
    assert not system_shaped("/a/b/c", "../a/b/c")


# --- property: the check's walk is the kernel's --------------------------------

COMPONENTS = st.sampled_from(["a", "b", "c.h", "usr"])
PIECES = st.sampled_from(["a", "b", "c.h", "..", ".", "", "usr", "etc"])


@st.composite
def requests(draw: st.DrawFn) -> PumpRequest:
    """Files, then links whose targets are mostly another entry's path (absolute, or
    relative with detours) and sometimes random pieces."""
    first = st.sampled_from(["a", "b"])
    paths = st.tuples(first, st.lists(COMPONENTS, min_size=1, max_size=3)).map(
        lambda p: "/" + "/".join((p[0], *p[1]))
    )
    names = draw(st.lists(paths, min_size=1, max_size=6, unique=True))
    files = draw(st.integers(1, len(names)))
    entries = [PumpEntry(name, body=name.encode()) for name in names[:files]]
    for name in names[files:]:
        if draw(st.booleans()):
            other = draw(st.sampled_from(names[:files] if draw(st.integers(0, 4)) else names))
            target = (
                other if draw(st.booleans()) else posixpath.relpath(other, posixpath.dirname(name))
            )
            detour = draw(st.sampled_from(["", "a/../", "./", "../"]))
            target = detour + target if not target.startswith("/") else target
        else:
            target = "/".join(draw(st.lists(PIECES, min_size=1, max_size=5)))
        entries.append(PumpEntry(name, link=target))
    cwd = draw(st.sampled_from([posixpath.dirname(names[0]), "/a/b", "/b/a", "/c"]))
    return PumpRequest(3, cwd, ("gcc",), tuple(entries))


def make(tree: Tree, base: Path) -> None:
    """The tree under ``base``, which stands for a sandbox's root."""
    for directory in tree.directories:
        (base / directory[1:]).mkdir()
    for name, body in tree.files:
        (base / name[1:]).write_bytes(body)
    for name, target in tree.links:
        os.symlink(target, base / name[1:])


def resolved_in_root(base: Path, names: list[str]) -> list[str | None]:
    """What the kernel makes of each name with ``base`` as the root (a child process
    chroots there): its real path, or None where it does not resolve."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # (the child only chroots, resolves and exits)
        try:
            os.close(read)
            os.chroot(base)
            os.chdir("/")
            out = [os.path.realpath(n) if os.path.exists(n) else None for n in names]
            os.write(write, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    result: list[str | None] = json.loads(data)
    return result


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(request=requests())
def test_every_accepted_link_resolves_inside_its_tree(request: PumpRequest, tmp_path: Path) -> None:
    try:
        tree = check_tree(request, system_dirs=(), reserved_tops=("usr", "etc"))
    except TreeRefused:
        return
    base = Path(tempfile.mkdtemp(dir=tmp_path))
    make(tree, base)
    made = {*dict(tree.files), *tree.directories}
    names = [name for name, _ in tree.links]
    for name, real in zip(names, resolved_in_root(base, names), strict=True):
        assert real in made, (name, real)
    for path in made:
        assert path.split("/")[1] in tree.tops and path.split("/")[1] not in ("usr", "etc")
