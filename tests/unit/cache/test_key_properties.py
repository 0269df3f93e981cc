"""Two accepted jobs whose objects may differ never share a cache key (DEVELOPERS.md: a
key covers everything that can change the object and nothing that cannot).

What a server compiles is exactly its command: the judge's canonical argv with the
input replaced by the server's own copy (``input`` + the suffix the judge derived) and
the output by its own file, run on the source. So two jobs compile alike when those
commands and sources are equal, and the key may leave out only what that replacement
takes away: the input's directory and stem, and ``-o NAME``. Requests vary in the
compiler's spelling, the language (the input's suffix, ``-x`` before or after it), the
text (what the defines expanded to), ``-O`` and ``-g`` levels, ``-c``/``-S``, the
input's place and name, ``-o``, and the protocol.
"""

from __future__ import annotations

from hypothesis import example, given, settings

from cache.keys import input_placeholder
from tests.support.cache_requests import (
    MAPS,
    Checkout,
    Request,
    accepted,
    checkout_key,
    checkout_pairs,
    compiled,
    key,
    pairs,
)


@settings(max_examples=600, deadline=None)
@given(pairs())
@example((Request(suffix=".ii"), Request(suffix=".i")))  # the review's C++ object for C
@example((Request(suffix=".C"), Request(suffix=".c")))
@example((Request(suffix=".c", language=("-x", "c++")), Request(suffix=".c")))
@example((Request(language=("-x", "c++"), language_after_input=True), Request()))
def test_jobs_that_share_a_key_compile_alike(pair: tuple[Request, Request]) -> None:
    a, b = pair
    job_a, job_b = accepted(a), accepted(b)
    if key(a, job_a) == key(b, job_b):
        assert compiled(a, job_a) == compiled(b, job_b)


@settings(max_examples=300, deadline=None)
@given(pairs())
@example((Request(directory="src/", stem="a", output=("-o", "a.o")),
          Request(directory="/home/bob/proj/", stem="main", output=())))  # fmt: skip
@example((Request(compiler="/usr/bin/gcc", language=("-xc++",)),
          Request(compiler="gcc", language=("-x", "c++"))))  # fmt: skip
def test_jobs_that_compile_alike_from_the_same_suffix_share_a_key(
    pair: tuple[Request, Request],
) -> None:
    """Sharing: what the server takes away (the input's place and stem, -o) and what the
    judge rewrites (/usr/bin/gcc, -xc++) costs no hit. (.cc and .cpp stay apart: the key
    keeps the suffix as the client wrote it, whatever a server derives from it.)"""
    a, b = pair
    job_a, job_b = accepted(a), accepted(b)
    same_suffix = input_placeholder(job_a.input_name) == input_placeholder(job_b.input_name)
    if compiled(a, job_a) == compiled(b, job_b) and same_suffix and a.protocol == b.protocol:
        assert key(a, job_a) == key(b, job_b)


@settings(max_examples=800, deadline=None)
@given(checkout_pairs())
@example((Checkout(), Checkout(root="/srv/b")))  # no debug info: one key, one object
@example((Checkout(name="a.c"), Checkout(root="/srv/b", name="b.c")))  # basenames
@example((Checkout(uses_file=True), Checkout(root="/srv/b", uses_file=True)))
@example((Checkout(debug="-g"), Checkout(debug="-g", root="/srv/b")))
@example((Checkout(debug="-g", prefix_map=MAPS[1]), Checkout(debug="-g", prefix_map=MAPS[1],
                                                              root="/srv/b")))  # fmt: skip
@example((Checkout(prefix_map=MAPS[4]), Checkout(root="/srv/b")))  # a map into a basename
@example((Checkout(hard="-fsanitize=address"), Checkout(hard="-fsanitize=address",
                                                         root="/srv/b")))  # fmt: skip
def test_jobs_from_two_checkouts_share_a_key_only_when_their_objects_are_one(
    pair: tuple[Checkout, Checkout],
) -> None:
    """Issue 27: what the key leaves out of the paths never lets two jobs share a key
    when their objects would differ: by directory, language, defines in the text,
    __FILE__, debug level, prefix maps, options that put paths in objects. (And with
    --cache-share-across-dirs, only in the paths debug info records.)"""
    a, b = pair
    if checkout_key(a) == checkout_key(b):
        assert a.object_records() == b.object_records(), (a, b)
    if checkout_key(a, True) == checkout_key(b, True):
        assert a.object_records(True) == b.object_records(True), (a, b)


@settings(max_examples=200, deadline=None)
@given(checkout_pairs())
def test_checkouts_whose_objects_cannot_differ_share_a_key(pair: tuple[Checkout, Checkout]) -> None:
    """Sharing: without debug info and without an option that records paths, two
    checkouts of one tree (same basenames, same __FILE__ text) share a key."""
    a, b = pair
    same_tree = {**a.__dict__, "root": b.root, "absolute": b.absolute} == b.__dict__
    plain = not a.debug_info() and not a.hard and not a.uses_file and not a.prefix_map
    if same_tree and plain:
        assert checkout_key(a) == checkout_key(b)
