"""What determines a compile's reply, as a digest (pure).

A cache key covers the compiler's identity (its ``--version`` line and binary
digest, as each server publishes them), the protocol, the preprocessed source, and
the arguments in the one canonical form :func:`key_argv` gives them: every argument
in order, except that the input's name keeps only its suffix (which, without ``-x``,
chooses the language) and ``-o NAME`` is left out. A server compiles its own copy of
the source into its own output file, so neither name reaches the compiler; the names
an object records come from the source's line markers, and of those only what can
reach the object stays in the key (:func:`job_digest`; the rules are in
cache/path_rules.py, the markers in cache/markers.py), so that a tree checked out
anywhere finds the results of the same tree checked out elsewhere. docs/cache.md has
the audit of every argument and path, and why each is kept or left out. Jobs whose
output depends on anything else are never cached (see :data:`NEVER_CACHED`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cache.markers import NO_LEADING_MARKER, MarkedText, scan
from cache.path_rules import (
    CLANG,
    DEBUG_MAP_OPTIONS,
    GCC,
    PathRule,
    assembler_debug,
    basename_rule,
    compiler_family,
    emits_debug_info,
    mapped_rule,
    maps_keep_basenames,
    normalised_paths,
    paths_reach_object,
    prefix_maps,
    records_switches,
    relative_rule,
    without_map_values,
)
from wire import args as wire_args

# Output depends on more than the request: files on the build machine (profiles),
# a random stamp (coverage notes), or code we do not know (plugins, specs).
NEVER_CACHED: tuple[tuple[str, str], ...] = (
    ("-fexec-charset", "string literals are converted by the server's conversion modules"),
    ("-fwide-exec-charset", "string literals are converted by the server's conversion modules"),
    ("-fpascal-strings", "a \\p length byte may be any character, a dot or a line end"),
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
    # (seventh review)
    (
        "-finput-charset",
        "the text is decoded from another charset: the key's scan reads "
        "its bytes, and UTF-7 hides a marker or __FILE__ from it",
    ),
    ("-frecord-gcc-switches", "the recorded command line names the server's own files"),
    ("-frecord-command-line", "the recorded command line names the server's own files"),
    ("-grecord-gcc-switches", "the recorded command line names the server's own files"),
    ("-grecord-command-line", "the recorded command line names the server's own files"),
    ("-fdiagnostics-format=j", "warnings in JSON escape the paths a hit's replay renames"),
    ("-fdiagnostics-format=s", "warnings in SARIF escape the paths a hit's replay renames"),
    # (fourteenth review: a hit replays the first compile's report)
    ("-ftime-report", "its report is of the compile that ran: a hit would replay another's"),
    ("-fmem-report", "its report is of the compile that ran: a hit would replay another's"),
    ("-fstats", "its report is of the compile that ran: a hit would replay another's"),
)


MAX_MAPS = 32
"""Prefix maps a key models; with more, the paths stay as they are (real builds give a
few)."""
TIME_MACROS = (b"__DATE__", b"__TIME__", b"__TIMESTAMP__")
"""clang expands these in a preprocessed text too (a client's preprocessor has expanded
them already; a text made by hand need not have): the object then holds the time of
its compile, and no hit may hand out an older one (a fifth review)."""


def working_directory(marked: MarkedText) -> bytes | None:
    """The directory gcc's working-directory marker names (``DIR//`` is ``DIR``)."""
    if marked.working_directory is None:
        return None
    return marked.paths[marked.working_directory].rstrip(b"/") or b"/"


def why_not_cacheable(argv: Sequence[str]) -> str | None:
    """None when a job may be cached, else the reason it may not."""
    args = list(argv[1:])
    for i, arg in enumerate(args):
        for prefix, reason in NEVER_CACHED:
            if arg.startswith(prefix):
                return f"{arg}: {reason}"
        if assembler_debug(args, i):
            return f"{arg}: the assembler's debug info names the server's temporary file"
    if "clang" not in argv[0] and _lto_without_seed(args):  # (cc may be gcc)
        return "-flto without -frandom-seed: gcc names its LTO sections by a random seed"
    if _objective_c(args):
        return "Objective-C: clang's object names the server's own file for the text"
    wrapped = [a for a in args if a.startswith("-fmessage-length=")]
    if wrapped and wrapped[-1] != "-fmessage-length=0":
        # (a seventeenth review: gcc broke a warning at a space in Alice's path, which
        # the replay then could not find to rename; and Bob's lines would break elsewhere)
        return f"{wrapped[-1]}: warnings are wrapped where the first compile's paths fell"
    return None


_OBJECTIVE_C_SUFFIXES = (".m", ".mm", ".M", ".mi", ".mii")


def _objective_c(args: Sequence[str]) -> bool:
    """Whether the job compiles Objective-C or Objective-C++: by ``-x`` or by its input's
    suffix (clang's GNU runtime records the name of the file it compiled, the server's
    own name for the text, in the object: a sixteenth review). Never cached."""
    for i, arg in enumerate(args):
        language = arg[2:] if arg.startswith("-x") and len(arg) > 2 else None
        if arg == "-x" and i + 1 < len(args):
            language = args[i + 1]
        if language is not None and language.startswith("objective-c"):
            return True
        previous = args[i - 1] if i else ""
        if arg.endswith(_OBJECTIVE_C_SUFFIXES) and previous != "-o" and not arg.startswith("-"):
            return True
    return False


def _lto_without_seed(args: Sequence[str]) -> bool:
    """gcc's last -flto/-fno-lto says LTO, and no -frandom-seed fixes the sections' names
    (two compiles of one text then differ: a tenth review; clang's do not)."""
    lto = False
    for arg in args:
        if arg == "-flto" or arg.startswith("-flto="):
            lto = True
        elif arg == "-fno-lto":
            lto = False
    return lto and not any(arg.startswith("-frandom-seed") for arg in args)


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
    scanned = wire_args.scan(argv, start=1)
    inputs = set(scanned.positionals)
    left_out = {i for output in scanned.outputs() for i in range(output.index, output.end)}
    return [
        input_placeholder(arg) if i in inputs else arg
        for i, arg in enumerate(argv)
        if i not in left_out
    ]


SHARED_FAMILIES = frozenset({GCC, CLANG})
"""The compilers whose objects the experiments behind the path rules were made with."""


@dataclass(frozen=True, slots=True)
class JobDigest:
    """What determines a job's reply, as digests: :attr:`exact` over the text as sent,
    and, when the rules allow (cache/path_rules.py), :attr:`portable`, over the text with
    what cannot reach the object left out of its paths, for the compilers in
    :attr:`families`. :attr:`anywhere` leaves the paths out entirely: two jobs that
    differ only by paths share it (the cache counts misses it would have found)."""

    exact: bytes
    portable: bytes | None = None
    families: frozenset[str] = frozenset()
    anywhere: bytes | None = None
    paths: tuple[bytes, ...] = ()
    """The text's distinct line-marker paths (a hit's warnings are rewritten with them)."""
    rule: str = "exact"
    """Which rule made :attr:`portable` (``no-debug``, ``prefix-maps``, ``any-dir``), or
    why there is none."""
    uncacheable: str | None = None
    """Why the text's result may never be cached (None: it may)."""

    @property
    def route(self) -> bytes:
        """The digest to route by (repeats to the backend that holds them)."""
        return self.portable if self.portable is not None else self.exact

    def digest_for(self, identity: CompilerIdentity) -> bytes:
        if self.portable is not None and compiler_family(identity.version) in self.families:
            return self.portable
        return self.exact


def _argv_digest(h: Any, protocol: int, args: Sequence[str]) -> None:
    h.update(b"\0%d\0" % protocol)
    h.update(len(args).to_bytes(4, "big"))
    for arg in args:
        encoded = arg.encode("utf-8", "surrogateescape")
        h.update(len(encoded).to_bytes(4, "big") + encoded)


def _digest(kind: bytes, protocol: int, args: Sequence[str], segments: bytes,
            marked: MarkedText, paths: bytes) -> bytes:  # fmt: skip
    h = hashlib.sha256(b"distlb-job-v3\0" + kind)
    _argv_digest(h, protocol, args)
    h.update(segments)
    h.update(len(marked.occurrences).to_bytes(4, "big") + marked.occurrences.tobytes())
    h.update(paths)
    return h.digest()


def job_digest(
    protocol: int, argv: Sequence[str], source: bytes, share_across_dirs: bool = False
) -> JobDigest:
    """The digests of a job (the text's markers are found in one pass, and it is hashed
    once). The arguments are counted and each is framed by its length (a placeholder
    holds a NUL), so no two command lines hash alike; the text is its stretches between
    paths, framed, the paths, and which marker names which path."""
    marked = scan(source)
    timed = next((m.decode() for m in TIME_MACROS if m in source), None)
    uncacheable = f"the text names {timed}: its object holds its compile's time" if timed else None
    if marked.assembler_reads is not None:
        uncacheable = f"{marked.assembler_reads}: the object may hold a server's file"
    if marked.hand_made is not None:
        uncacheable = f"{marked.hand_made}, which no client's preprocessor writes"
    if marked.obstacle == NO_LEADING_MARKER:
        # (the compiler names the main file after the server's own file for the text,
        # a name of the job's own: server/runner.py)
        uncacheable = f"{NO_LEADING_MARKER}: its object names the server's file"
    args = key_argv(argv)
    segments = marked.segments(source)
    exact = _digest(b"exact", protocol, args, segments, marked,
                    normalised_paths(marked.paths, lambda p: p))  # fmt: skip
    if not marked.paths:
        return JobDigest(exact, rule="no line markers", uncacheable=uncacheable)
    mapless = without_map_values(args)
    anywhere = _digest(b"anywhere", protocol, mapless, segments, marked, b"")
    choice = _portable_rule(argv, marked, share_across_dirs)
    if isinstance(choice, str):
        return JobDigest(exact, anywhere=anywhere, paths=marked.paths, rule=choice,
                         uncacheable=uncacheable)  # fmt: skip
    name, rule, families, key_args = choice
    portable = _digest(name.encode(), protocol, key_args(args), segments, marked,
                       normalised_paths(marked.paths, rule))  # fmt: skip
    return JobDigest(exact, portable, families, anywhere, marked.paths, name, uncacheable)


def _portable_rule(
    argv: Sequence[str], marked: MarkedText, share_across_dirs: bool
) -> str | tuple[str, PathRule, frozenset[str], Callable[[Sequence[str]], list[str]]]:
    """The rule a job's paths are normalised by (its name, the rule, the compilers it
    holds for, and what becomes of the arguments), or why they are not."""
    if marked.obstacle is not None:
        return marked.obstacle
    hard = paths_reach_object(argv)
    if hard is not None:
        return hard
    maps = prefix_maps(argv)
    if len(maps) > MAX_MAPS:
        # (each path is checked against each map: 4,000 maps and 20,000 markers took
        # 14 s of a thread holding the GIL, an eighth review)
        return f"more than {MAX_MAPS} prefix maps"
    if not emits_debug_info(argv):
        if not maps_keep_basenames(maps, marked.paths):
            return "a prefix map could change a basename"
        # (clang names a lambda by its path in __PRETTY_FUNCTION__: gcc does not)
        families = frozenset({GCC}) if marked.names_types else SHARED_FAMILIES
        return "no-debug", basename_rule, families, without_map_values
    cwd = working_directory(marked)
    if cwd is None:
        return "debug info, and no working-directory marker"
    debug_maps = prefix_maps(argv, DEBUG_MAP_OPTIONS)
    if debug_maps and not records_switches(argv):
        return "prefix-maps", mapped_rule(debug_maps, cwd), frozenset({GCC}), without_map_values
    if share_across_dirs:
        assert marked.working_directory is not None
        marker = marked.paths[marked.working_directory]
        families = frozenset({GCC}) if marked.names_types else SHARED_FAMILIES
        return "any-dir", relative_rule(cwd, marker), families, list
    return "debug info without prefix maps"


@dataclass(frozen=True, slots=True)
class CompilerIdentity:
    """What a server says about one of its compilers."""

    version: str
    digest: str

    @property
    def token(self) -> str:
        return hashlib.sha256(f"{self.version}\0{self.digest}".encode()).hexdigest()[:32]


def cache_key(job: JobDigest, identity: CompilerIdentity) -> str:
    """The key under which a job's result is stored: the job, as ``identity``'s compiler
    family allows it to be normalised, and the compiler that ran it."""
    h = hashlib.sha256(job.digest_for(identity))
    h.update(identity.token.encode())
    return h.hexdigest()


def anywhere_key(job: JobDigest, identity: CompilerIdentity) -> str | None:
    """The key of the marker that says some entry's job differed from this one only by
    paths (None: the job names no paths)."""
    if job.anywhere is None:
        return None
    h = hashlib.sha256(b"distlb-anywhere-v1\0" + job.anywhere)
    h.update(identity.token.encode())
    return h.hexdigest()
