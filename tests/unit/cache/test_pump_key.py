"""Pump jobs' cache keys (cache/pump_key.py) and entries: two pump requests share a key
exactly when everything a pump compile reads is the same (the headers' fingerprint, the
protocol, the working directory, every argument, every file's name and content or link
target), whatever order the include server sent the files in."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cache.entry import CachedResult, RejectedEntry, decode_entry, encode_entry
from cache.keys import CompilerIdentity, cache_key
from cache.pump_key import pump_digest, why_not_cacheable_pump
from wire.events import PumpEntry, PumpRequest

SECRET = b"s" * 32
IDENTITY = CompilerIdentity("gcc (Debian 12.2.0-14) 12.2.0", "ab" * 32)

_names = st.sampled_from(["/p/src/a.c", "/p/include/u.h", "/p/include/v.h", "/p/b/x.h"])
_bodies = st.sampled_from([b"", b"int a;\n", b"int b;\n", b"#include <stdio.h>\n"])
_links = st.sampled_from([None, "u.h", "../include/v.h"])
_entries = st.dictionaries(_names, st.tuples(_links, _bodies), min_size=1, max_size=4)
_argv = st.lists(st.sampled_from(["-O2", "-g", "-I../include", "-DX=1", "-c", "-o", "a.o"]),
                 max_size=5).map(lambda a: ("gcc", *a, "../src/a.c"))  # fmt: skip


def _request(cwd: str, argv: tuple[str, ...], files: dict[str, tuple[str | None, bytes]],
             protocol: int = 3) -> PumpRequest:  # fmt: skip
    entries = tuple(
        PumpEntry(n, link=link) if link is not None else PumpEntry(n, body=body)
        for n, (link, body) in files.items()
    )
    return PumpRequest(protocol, cwd, argv, entries)


def _meaning(request: PumpRequest, headers: str) -> object:
    """Everything the compile reads, order-free (what the key must stand for)."""
    files = sorted((e.name, e.link, e.body if e.link is None else b"") for e in request.entries)
    return (request.protocol, headers, request.cwd, request.argv, files)


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(["/p/build", "/q/build"]), _argv, _entries, st.sampled_from(["h1", "h2"]),
    st.sampled_from(["/p/build", "/q/build"]), _argv, _entries, st.sampled_from(["h1", "h2"]),
    st.randoms(),
)  # fmt: skip
def test_two_pump_jobs_share_a_key_exactly_when_they_compile_alike(
    cwd_a: str, argv_a: tuple[str, ...], files_a: dict[str, tuple[str | None, bytes]], h_a: str,
    cwd_b: str, argv_b: tuple[str, ...], files_b: dict[str, tuple[str | None, bytes]], h_b: str,
    rnd: random.Random,
) -> None:  # fmt: skip
    a, b = _request(cwd_a, argv_a, files_a), _request(cwd_b, argv_b, files_b)
    b = replace(b, entries=tuple(rnd.sample(b.entries, len(b.entries))))  # (any order)
    same = _meaning(a, h_a) == _meaning(b, h_b)
    assert (pump_digest(a, h_a).exact == pump_digest(b, h_b).exact) == same


def _with(base: PumpRequest, files: dict[str, tuple[str | None, bytes]], name: str,
          entry: tuple[str | None, bytes]) -> PumpRequest:  # fmt: skip
    return _request(base.cwd, base.argv, {**files, name: entry})


def test_the_files_order_does_not_change_the_key_and_each_part_does() -> None:
    files = {"/p/src/a.c": (None, b"int a;\n"), "/p/include/u.h": (None, b"int u;\n"),
             "/p/include/w.h": ("u.h", b"")}  # fmt: skip
    base = _request("/p/build", ("gcc", "-c", "../src/a.c"), files)
    key = pump_digest(base, "h").exact
    shuffled = replace(base, entries=tuple(reversed(base.entries)))
    assert pump_digest(shuffled, "h").exact == key
    changed = [
        pump_digest(base, "other headers"),
        pump_digest(replace(base, protocol=2), "h"),
        pump_digest(replace(base, cwd="/p/elsewhere"), "h"),
        pump_digest(replace(base, argv=("gcc", "-c", "../src/a.c", "-g")), "h"),
        pump_digest(_with(base, files, "/p/src/a.c", (None, b"int b;\n")), "h"),
        pump_digest(_with(base, files, "/p/include/w.h", ("v.h", b"")), "h"),
        pump_digest(_with(base, files, "/p/include/x.h", (None, b"")), "h"),
    ]  # fmt: skip
    assert len({key, *(c.exact for c in changed)}) == len(changed) + 1
    # (the compiler's identity is the key's too)
    other = CompilerIdentity(IDENTITY.version, "cd" * 32)
    assert cache_key(pump_digest(base, "h"), IDENTITY) != cache_key(pump_digest(base, "h"), other)


@pytest.mark.parametrize(
    ("argv", "body", "headers", "why"),
    [
        (("gcc", "-c", "a.c"), b"const char *t = __TIME__;\n", "h", "__TIME__"),
        (("gcc", "-c", "a.c"), b"const char *d = __DATE__;\n", "h", "__DATE__"),
        (("gcc", "-c", "a.c"), b"const char *s = __TIMESTAMP__;\n", "h", "__TIMESTAMP__"),
        (("gcc", "-DWHEN=__TIME__", "-c", "a.c"), b"", "h", "__TIME__"),
        # (spliced: the preprocessor joins the lines before it reads the name)
        (("gcc", "-c", "a.c"), b"const char *t = __TI\\\nME__;\n", "h", "__TIME__"),
        (("gcc", "-c", "a.c"), b"const char *t = __DA\\ \r\nTE__;\n", "h", "__DATE__"),
        (("gcc", "-trigraphs", "-c", "a.c"), b"const char *t = __TI??/\nME__;\n", "h", "__TIME__"),
        (("gcc", "--coverage", "-c", "a.c"), b"", "h", "coverage"),
        (("gcc", "-c", "a.c"), b"int a;\n", "", "no system headers' fingerprint"),
    ],
)
def test_a_pump_job_that_a_hit_could_not_reproduce_is_not_cached(
    argv: tuple[str, ...], body: bytes, headers: str, why: str
) -> None:
    request = _request("/p", argv, {"/p/a.c": (None, body)})
    found = why_not_cacheable_pump(request, headers)
    assert found is not None and why in found
    assert (
        why_not_cacheable_pump(
            _request("/p", ("gcc", "-c", "a.c"), {"/p/a.c": (None, b"int a;\n")}), "h"
        )
        is None
    )


def test_a_pump_entry_keeps_its_dependency_file_and_is_not_taken_for_another_kind() -> None:
    result = CachedResult(obj=b"OBJ", stderr=b"warn", stdout=b"", deps=b"main.o: main.c\n")
    data = encode_entry("k", result, SECRET)
    assert data.startswith(b"DLBP1\n")
    assert decode_entry("k", data, SECRET) == result
    plain = encode_entry("k", replace(result, deps=None), SECRET)
    assert decode_entry("k", plain, SECRET).deps is None
    # Relabelled as the other kind (or moved to another key), its MAC does not verify.
    with pytest.raises(RejectedEntry):
        decode_entry("k", b"DLBC3\n" + data[6:], SECRET)
    with pytest.raises(RejectedEntry):
        decode_entry("other", data, SECRET)


def _marked(body: bytes, *markers: str, argv: tuple[str, ...] = ("gcc", "-I../include", "-c",
            "../src/a.c")) -> PumpRequest:  # fmt: skip
    files: dict[str, tuple[str | None, bytes]] = {
        "/p/src/a.c": (None, body), "/p/include/u.h": (None, b"int u;\n")
    }  # fmt: skip
    files |= {f"{d}/forcing_technique_271828": (None, b"") for d in markers}
    return _request("/p/build", argv, files)


def test_the_include_servers_markers_are_left_out_where_no_path_can_go_up_past_one() -> None:
    """The include server marks every directory it has seen in its run, so two builds
    of one tree under ``make -j`` send different markers: an empty directory holds
    nothing to include, and matters only to a ``..`` out of it."""
    body = b'#include "u.h"\n#include <stdio.h>\nint a(void) { return 0; }\n'
    one = pump_digest(_marked(body, "/p/build", "/p/lib"), "h").exact
    assert pump_digest(_marked(body, "/p/build", "/p/lib", "/p/doc"), "h").exact == one
    # (whether the working directory is made still counts: the compile runs there)
    assert pump_digest(_marked(body, "/p/lib"), "h").exact != one


@pytest.mark.parametrize(
    ("body", "argv"),
    [
        (b'#include "../lib/../include/u.h"\n', None),  # (a path up out of a directory)
        (b"#define UP ..\n", None),  # (which a macro could put in a name)
        (b"#include HEADER\n", None),  # (a computed name)
        (b"#if __has_include( NAME )\n#endif\n", None),
        (b'#if __has_include("../lib/forcing_technique_271828")\n#endif\n', None),
        (b"int a;\n", ("gcc", "-I/p/lib/../include", "-c", "../src/a.c")),
        (b"int a;\n", ("gcc", "-Ilib/..", "-c", "../src/a.c")),
        (b"int a;\n", ("gcc", "-Wmissing-include-dirs", "-I../lib", "-c", "../src/a.c")),
        # (an error without the marker, a success with it: a twenty-second review)
        (b"int a;\n", ("gcc", "-Werror=missing-include-dirs", "-I/p/lib", "-c", "../src/a.c")),
        (
            b"int a;\n",
            ("gcc", "-iprefix", "/p/lib/", "-iwithprefix", "../include", "-c", "../src/a.c"),
        ),
    ],
)
def test_markers_stay_in_the_key_where_a_path_could_go_up_past_one(
    body: bytes, argv: tuple[str, ...] | None
) -> None:
    args = {"argv": argv} if argv else {}
    one = pump_digest(_marked(body, "/p/build", "/p/lib", **args), "h").exact
    assert pump_digest(_marked(body, "/p/build", **args), "h").exact != one
