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
from tests.support.cache_requests import Request, accepted, compiled, key, pairs


@settings(max_examples=600)
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


@settings(max_examples=300)
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
