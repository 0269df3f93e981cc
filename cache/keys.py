"""What determines a compile's reply, as a digest (pure).

A cache key covers the compiler's identity (its ``--version`` line and binary
digest, as each server publishes them), the protocol, the preprocessed source, and
the arguments in the one canonical form :func:`key_argv` gives them: every argument
in order, except that the input's name keeps only its suffix (which, without ``-x``,
chooses the language) and ``-o NAME`` is left out. A server compiles its own copy of
the source into its own output file, so neither name reaches the compiler; the names
an object records come from the source's line markers. docs/cache.md has the audit
of every argument, and why each is kept or left out. Jobs whose output depends on
anything else are never cached (see :data:`NEVER_CACHED`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from wire.args import scan

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
    ("--specs", "specs files are not part of the request"),
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


INPUT_PLACEHOLDER = "\0input"
"""What an input's name becomes in a key, followed by its suffix. No argument a job may
carry holds a NUL (the judge refuses one), so it can stand for nothing else."""


def input_placeholder(name: str) -> str:
    """:data:`INPUT_PLACEHOLDER` and the suffix of ``name``'s last component, exactly
    (``.c``, ``.C``, ``.ii``...: the compiler chooses the language by it, case and all)."""
    base = name.rsplit("/", 1)[-1]
    return INPUT_PLACEHOLDER + (base[base.rindex(".") :] if "." in base else "")


def key_argv(argv: Sequence[str]) -> list[str]:
    """The one canonical form of a command line that a key covers: ``argv`` with each
    input (a positional argument) replaced, in place, by :func:`input_placeholder`, and
    ``-o NAME`` left out; everything else as it is, in order. Inputs and ``-o`` are
    found by the scanner the judge also uses (:mod:`wire.args`), so a key and a compile
    never disagree on which argument is which. Give it the judge's canonical argv (as
    both daemons do), so that spellings the judge rewrites share a key."""
    scanned = scan(argv, start=1)
    inputs = set(scanned.positionals)
    left_out = {i for output in scanned.outputs() for i in range(output.index, output.end)}
    return [
        input_placeholder(arg) if i in inputs else arg
        for i, arg in enumerate(argv)
        if i not in left_out
    ]


def job_digest(protocol: int, argv: Sequence[str], source: bytes) -> bytes:
    """The digest of a job without the compiler's identity (also used to route repeats).
    The arguments are counted and each is framed by its length (a placeholder holds a
    NUL), so no two command lines hash alike."""
    args = key_argv(argv)
    h = hashlib.sha256()
    h.update(b"distlb-job-v2\0%d\0" % protocol)
    h.update(len(args).to_bytes(4, "big"))
    for arg in args:
        encoded = arg.encode("utf-8", "surrogateescape")
        h.update(len(encoded).to_bytes(4, "big") + encoded)
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
