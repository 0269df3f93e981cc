"""What determines a compile's reply, as a digest (pure).

A cache key covers the compiler's identity (its ``--version`` line and binary
digest, as each server publishes them), the arguments with the input and output
names taken out (they never reach the object: the compiler reads a temp file and
the file names it records come from the preprocessed source's line markers), the
protocol, and the preprocessed source. Jobs whose output depends on anything
else are never cached (see :data:`NEVER_CACHED`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from wire.args import without_input_and_output

# Output depends on more than the request: files on the build machine (profiles),
# a random stamp (coverage notes), or code we do not know (plugins, specs).
NEVER_CACHED: tuple[tuple[str, str], ...] = (
    ("-fprofile-arcs", "coverage counters carry a per-compile stamp"),
    ("-ftest-coverage", "coverage notes carry a per-compile stamp"),
    ("--coverage", "coverage notes carry a per-compile stamp"),
    ("-fprofile-generate", "profile instrumentation carries a per-compile stamp"),
    ("-fprofile-use", "reads profile files that are not part of the request"),
    ("-fprofile-instr", "profile instrumentation or feedback files"),
    ("-fprofile-sample-use", "reads profile files that are not part of the request"),
    ("-fauto-profile", "reads profile files that are not part of the request"),
    ("-fplugin", "plugins are code the key cannot see"),
    ("-specs", "specs files are not part of the request"),
    ("-gsplit-dwarf", "the .dwo file is not returned, and its name is in the object"),
    ("-fdump-", "dump files are not returned"),
    ("-save-temps", "temporary files are not returned"),
)


def why_not_cacheable(argv: Sequence[str]) -> str | None:
    """None when a job may be cached, else the reason it may not."""
    for arg in argv[1:]:
        for prefix, reason in NEVER_CACHED:
            if arg.startswith(prefix):
                return f"{arg}: {reason}"
    return None


def normalized_args(argv: Sequence[str]) -> list[str]:
    """argv without the input file name and without ``-o NAME``, found by the one argv
    scanner the judge also uses (:mod:`wire.args`), so the two never disagree."""
    return without_input_and_output(argv)


def job_digest(protocol: int, argv: Sequence[str], source: bytes) -> bytes:
    """The digest of a job without the compiler's identity (also used to route repeats)."""
    h = hashlib.sha256()
    h.update(b"distlb-job-v1\0%d\0" % protocol)
    for arg in normalized_args(argv):
        h.update(arg.encode("utf-8", "surrogateescape") + b"\0")
    h.update(b"\0source\0")
    h.update(source)
    return h.digest()


@dataclass(frozen=True, slots=True)
class CompilerIdentity:
    """What a server says about one of its compilers."""

    version: str
    digest: str

    @property
    def token(self) -> str:
        return hashlib.sha256(f"{self.version}\0{self.digest}".encode()).hexdigest()[:32]


def cache_key(job: bytes, identity: CompilerIdentity) -> str:
    """The key under which a job's result is stored: the job and the compiler that ran it."""
    h = hashlib.sha256(job)
    h.update(identity.token.encode())
    return h.hexdigest()
