"""The cache's pure parts and local stores: keys, authenticated entries, memory and disk."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from itertools import chain
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from cache import (
    BadEntry,
    CachedResult,
    CompilerIdentity,
    CorruptEntry,
    DiskStore,
    MemoryStore,
    RejectedEntry,
    ResultCache,
    cache_key,
    decode_entry,
    encode_entry,
    job_digest,
    key_argv,
    why_not_cacheable,
)
from daemon.judge import Judge, Refused
from tests.support.forged import old_format_entry
from wire.args import Form, default_table

GCC12 = CompilerIdentity("gcc (Debian 12.2.0-14) 12.2.0", "ab" * 32)
SECRET = b"s" * 32
KEY = "e" * 64


def test_input_and_output_names_do_not_change_the_job() -> None:
    a = job_digest(1, ["gcc", "-O2", "-c", "src/a.c", "-o", "obj/a.o"], b"int a;")
    b = job_digest(1, ["gcc", "-O2", "-c", "/home/bob/b.c", "-oB.o"], b"int a;")
    assert a == b
    assert key_argv(["gcc", "-O2", "-c", "x.cc", "-o", "x.o"]) == ["gcc", "-O2", "-c", "\0input.cc"]


SUFFIXES = [".c", ".i", ".cc", ".cpp", ".cxx", ".cp", ".c++", ".C", ".ii", ".m", ".mi", ".mm",
            ".M", ".mii"]  # fmt: skip


def test_the_input_suffix_is_in_the_job_exactly_as_the_compiler_reads_it() -> None:
    """Without -x the suffix chooses the language (.c is C, .C is C++): each suffix,
    case and all, is a job of its own, wherever the file lives and whatever its stem."""
    digests = {job_digest(1, ["gcc", "-c", f"dir.d/x{suffix}"], b"int a;") for suffix in SUFFIXES}
    assert len(digests) == len(SUFFIXES)
    assert job_digest(1, ["gcc", "-c", "a.C"], b"") == job_digest(1, ["gcc", "-c", "/b/c.C"], b"")
    assert key_argv(["gcc", "-c", "dir.x/noext"]) == ["gcc", "-c", "\0input"]


def test_language_options_keep_their_place_around_the_input() -> None:
    before = job_digest(1, ["gcc", "-c", "-x", "c++", "a.c"], b"int a;")
    after = job_digest(1, ["gcc", "-c", "a.c", "-x", "c++"], b"int a;")
    assert before != after  # (-x applies to the files after it only)


@pytest.mark.parametrize(
    ("other_argv", "other_source", "other_protocol"),
    [
        (["gcc", "-O3", "-c", "a.c"], b"int a;", 1),  # flags
        (["g++", "-O2", "-c", "a.c"], b"int a;", 1),  # compiler name
        (["gcc", "-O2", "-c", "a.c"], b"int b;", 1),  # source
        (["gcc", "-O2", "-c", "a.c"], b"int a;", 2),  # protocol
        (["gcc", "-c", "-O2", "a.c"], b"int a;", 1),  # argument order
    ],
)
def test_anything_else_changes_the_job(other_argv: list[str], other_source: bytes,
                                       other_protocol: int) -> None:  # fmt: skip
    base = job_digest(1, ["gcc", "-O2", "-c", "a.c"], b"int a;")
    assert job_digest(other_protocol, other_argv, other_source) != base


_OPTIONS = [
    ("-O2",),
    ("-O3",),
    ("-g",),
    ("-DX=1",),
    ("-DX=2",),
    ("-Wall",),
    ("-fPIC",),
    ("-MT", "t.c"),
    ("-I", "inc"),
    ("-Xlinker", "b.c"),
    ("-std=c11",),
    ("-x", "c++"),
]
"""Options with their values (drawn apart, most command lines were refused: a value
without its option is a second input, and Hypothesis found too few it could use)."""


@given(
    options=st.lists(st.sampled_from(_OPTIONS), max_size=6).map(lambda o: [*chain(*o)]),
    other=st.lists(st.sampled_from(_OPTIONS), max_size=6).map(lambda o: [*chain(*o)]),
    input_a=st.sampled_from(["a.c", "/src/a.c", "dir/b.c"]),
    input_b=st.sampled_from(["a.c", "/src/a.c", "dir/b.c"]),
    source_a=st.sampled_from([b"int a;", b"int b;"]),
    source_b=st.sampled_from([b"int a;", b"int b;"]),
)
def test_jobs_share_a_key_only_when_all_but_the_input_and_output_names_match(
    options: list[str],
    other: list[str],
    input_a: str,
    input_b: str,
    source_a: bytes,
    source_b: bytes,
) -> None:
    """Option values that look like source names (-MT t.c, -Xlinker b.c) are not taken
    for the input: the scanner knows which options take the next argument."""
    argv_a = ["gcc", *options, "-c", input_a, "-o", "a.o"]
    argv_b = ["gcc", *other, "-c", input_b, "-o", "elsewhere/b.o"]
    for argv in (argv_a, argv_b):
        try:
            Judge().judge(argv)
        except Refused:
            assume(False)  # only jobs that may run are ever keyed
    same = options == other and source_a == source_b
    assert (job_digest(1, argv_a, source_a) == job_digest(1, argv_b, source_b)) == same


def test_another_compiler_identity_is_another_key() -> None:
    job = job_digest(1, ["gcc", "-c", "a.c"], b"int a;")
    other_version = CompilerIdentity("gcc (Fake) 99.0", GCC12.digest)
    other_binary = CompilerIdentity(GCC12.version, "cd" * 32)
    keys = {cache_key(job, identity) for identity in (GCC12, other_version, other_binary)}
    assert len(keys) == 3


@pytest.mark.parametrize(
    "flag", ["--coverage", "-fprofile-arcs", "-fprofile-use=x", "-fprofile-generate",
             "-gsplit-dwarf", "-fplugin=x.so", "-save-temps", "-finput-charset=UTF-7",
             "-frecord-gcc-switches", "-fdiagnostics-format=json", "-Wa,--gdwarf-5"],
)  # fmt: skip
def test_jobs_whose_output_depends_on_more_are_never_cached(flag: str) -> None:
    reason = why_not_cacheable(["gcc", "-c", "a.c", flag])
    assert reason is not None and flag.split("=")[0] in reason


def test_a_specs_file_keeps_a_job_out_of_the_cache_however_it_is_spelled() -> None:
    """A specs file is not part of the request (the trust review, finding 4: the list
    matched -specs only, and --specs= jobs were cached)."""
    specs = [spec for spec in default_table().specs if spec.kind == "specs"]
    assert {spec.spelling for spec in specs} == {"-specs=", "--specs="}
    for spec in specs:
        assert spec.form is Form.JOINED
        job = Judge().judge(
            ["gcc", f"{spec.spelling}/usr/share/dpkg/pie-compile.specs", "-c", "a.c"]
        )
        assert why_not_cacheable(job.argv) is not None, job.argv


def test_ordinary_jobs_are_cacheable() -> None:
    assert why_not_cacheable(["gcc", "-O2", "-g", "-Wall", "-c", "a.c", "-o", "a.o"]) is None


@given(obj=st.binary(max_size=2000), err=st.binary(max_size=200), out=st.binary(max_size=200))
def test_entries_round_trip(obj: bytes, err: bytes, out: bytes) -> None:
    result = CachedResult(obj=obj, stderr=err, stdout=out)
    assert decode_entry(KEY, encode_entry(KEY, result, SECRET), SECRET) == result


_MAC_END = 6 + 32


@given(data=st.data())
def test_any_flipped_byte_is_detected(data: st.DataObject) -> None:
    entry = bytearray(encode_entry(KEY, CachedResult(obj=b"\x7fELF" * 50, stderr=b"warning"),
                                   SECRET))  # fmt: skip
    position = data.draw(st.integers(0, len(entry) - 1))
    entry[position] ^= data.draw(st.integers(1, 255))
    # A flip in the MAC leaves an intact entry whose MAC fails; anywhere else the
    # checksum (or the magic) tells damage.
    expected = RejectedEntry if 6 <= position < _MAC_END else CorruptEntry
    with pytest.raises(expected):
        decode_entry(KEY, bytes(entry), SECRET)


def test_truncated_entries_are_detected() -> None:
    entry = encode_entry(KEY, CachedResult(obj=b"x" * 100), SECRET)
    for cut in (0, 5, 40, len(entry) - 1):
        with pytest.raises(CorruptEntry):
            decode_entry(KEY, entry[:cut], SECRET)


@pytest.mark.parametrize(
    "forged",
    [
        pytest.param(old_format_entry, id="old format, plain sha256"),
        pytest.param(lambda r: encode_entry(KEY, r, b"w" * 32), id="another secret"),
        pytest.param(lambda r: encode_entry("f" * 64, r, SECRET), id="moved from another key"),
    ],
)
def test_an_entry_not_made_with_the_secret_for_its_key_is_rejected(
    forged: Callable[[CachedResult], bytes],
) -> None:
    with pytest.raises(RejectedEntry):
        decode_entry(KEY, forged(CachedResult(obj=b"\x7fELF evil")), SECRET)


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        ResultCache([MemoryStore(1000)], b"x" * 31)
    assert issubclass(CorruptEntry, BadEntry) and issubclass(RejectedEntry, BadEntry)


def test_memory_store_is_bounded_in_bytes_and_evicts_least_recently_used() -> None:
    async def scenario() -> None:
        store = MemoryStore(max_bytes=250)
        await store.put("a" * 64, b"1" * 100)
        await store.put("b" * 64, b"2" * 100)
        assert await store.get("a" * 64) == b"1" * 100  # a is now the most recent
        await store.put("c" * 64, b"3" * 100)
        assert await store.get("b" * 64) is None
        assert await store.get("a" * 64) is not None
        assert store.size_bytes <= 250
        await store.put("d" * 64, b"4" * 1000)  # larger than the bound: not kept
        assert await store.get("d" * 64) is None

    asyncio.run(scenario())


def test_disk_store_writes_atomically_and_stays_within_its_bound(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = DiskStore(str(tmp_path / "cache"), max_bytes=1000)
        keys = [f"{i:064x}" for i in range(30)]
        for key in keys:
            await store.put(key, bytes(100))
        files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
        assert not any(p.name.startswith(".tmp-") for p in files)
        assert sum(p.stat().st_size for p in files) <= 1000
        assert await store.get(keys[-1]) == bytes(100)
        with pytest.raises(ValueError):
            await store.get("../../etc/passwd")

    asyncio.run(scenario())


def test_result_cache_deletes_a_corrupt_entry_and_counts_a_miss(tmp_path: Path) -> None:
    async def scenario() -> None:
        disk = DiskStore(str(tmp_path / "c"), max_bytes=10**6)
        cache = ResultCache([disk], SECRET)
        key = "f" * 64
        await cache.put(key, CachedResult(obj=b"object"))
        assert (await cache.get(key)) == CachedResult(obj=b"object")
        path = tmp_path / "c" / key[:2] / key
        path.write_bytes(path.read_bytes()[:-1] + b"X")
        assert await cache.get(key) is None
        assert (cache.stats.hits, cache.stats.misses, cache.stats.corrupt) == (1, 1, 1)
        assert cache.stats.rejected == 0
        assert not path.exists()

    asyncio.run(scenario())


def test_result_cache_rejects_forged_entries_and_serves_none(tmp_path: Path) -> None:
    """Whoever can write to a store can put bytes under a job's key, but not make them
    a hit: the forged entries are misses, counted as rejected, and deleted."""

    async def scenario() -> None:
        disk = DiskStore(str(tmp_path / "c"), max_bytes=10**6)
        cache = ResultCache([disk], SECRET)
        evil = CachedResult(obj=b"\x7fELF answer() returns 666")
        for forged in (old_format_entry(evil), encode_entry(KEY, evil, b"w" * 32)):
            await disk.put(KEY, forged)
            assert await cache.get(KEY) is None
            assert await disk.get(KEY) is None
        assert (cache.stats.hits, cache.stats.misses) == (0, 2)
        assert (cache.stats.rejected, cache.stats.corrupt) == (2, 0)

    asyncio.run(scenario())
