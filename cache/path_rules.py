"""Which of a text's paths can reach a job's object, read from its command line (pure).

Every rule here was checked with gcc 12 and clang 14 by compiling the same sources from
two directories and comparing the objects byte for byte
(tests/integration/test_cache_paths_gcc.py; docs/cache.md has the table):

- **Without debug info** an object names its main file only by its basename (the
  ``STT_FILE`` symbol, clang's ``_GLOBAL__sub_I_<name>``), after gcc applies the debug
  prefix maps to it; everything else a path could change is an obstacle of the text
  (cache/markers.py) or an option in :func:`paths_reach_object`. So the key keeps each
  path's basename and which markers name the same file, and drops the directories
  and the maps' values, unless a map could change a basename.
- **With debug info and prefix maps**, gcc records each marker's path, its directory
  and the working directory as the maps make them (the last map given that matches
  wins; ``-ffile-prefix-map`` and ``-fdebug-prefix-map`` are one list; a map is a
  plain string prefix). The key keeps those mapped forms instead of the paths. clang
  records its own working directory (the server's), not the text's: for clang this
  rule is not used.
- **With debug info and no maps**, every path is recorded as it is: kept, unless the
  operator opts in to sharing anyway (``--cache-share-across-dirs``): then paths under
  the working directory are kept relative to it, and the object records the first
  builder's directory.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

PathRule = Callable[[bytes], bytes]
"""What a key keeps of one path (cache/path_rules.py makes them)."""


def normalised_paths(paths: Sequence[bytes], rule: PathRule) -> bytes:
    """What a key covers of ``paths`` under ``rule``: each path's normal form, framed
    by its length. Two jobs whose paths normalise alike share this (with the paths'
    equality structure, which the caller hashes too). The hook for pump mode: its file
    names go through the same rules."""
    out = bytearray()
    for path in paths:
        form = rule(path)
        out += len(form).to_bytes(4, "big") + form
    return bytes(out)


def basename(path: bytes) -> bytes:
    return path.rsplit(b"/", 1)[-1]


def directory(path: bytes) -> bytes:
    """A path's directory part, without the slash (``b""`` for a bare name)."""
    return path.rsplit(b"/", 1)[0] if b"/" in path else b""


MAP_OPTIONS = ("-fdebug-prefix-map=", "-ffile-prefix-map=", "-fmacro-prefix-map=",
               "-fprofile-prefix-map=")  # fmt: skip
DEBUG_MAP_OPTIONS = ("-fdebug-prefix-map=", "-ffile-prefix-map=")
"""The maps gcc applies to the paths it records (``-fmacro-prefix-map`` acts on
``__FILE__``, which the client's preprocessor has expanded already)."""
MAP_PLACEHOLDER = "\0map"

GCC = "gcc"
CLANG = "clang"
_GCC_VERSION = re.compile(r"(?:\S+-)?(?:gcc|g\+\+|cc|c\+\+)(?:-[0-9][0-9.]*)? \([^)]*\) [0-9]")


def compiler_family(version: str) -> str | None:
    """``gcc``, ``clang`` or None (another compiler: keys keep every path) from the first
    line of a compiler's ``--version``, as servers publish it."""
    if "clang" in version.lower():
        return CLANG
    if _GCC_VERSION.match(version):
        return GCC
    return None


_HARD: tuple[tuple[str, str], ...] = (
    ("-fsanitize", "sanitizers name the source files in the object"),
    ("-flto", "LTO objects carry every source location"),
    ("-fembed-bitcode", "the embedded bitcode names the source file"),
    ("-fverbose-asm", "the assembly quotes the source files by path"),
    ("-fcoverage-mapping", "coverage mappings name the source files"),
    ("-fprofile", "profiling names files"),
    ("--coverage", "coverage notes name the source files"),
    ("-finstrument-functions-exclude-file-list=", "the instrumented functions depend on paths"),
    ("-Xclang", "clang front-end options are not modelled"),
    ("-gctf", "CTF records the main file's path, the prefix maps unapplied"),
    ("-gbtf", "BTF records the main file's path, the prefix maps unapplied"),
)
"""Options (by prefix) with which the text's paths reach the object in ways no
normalisation follows."""
_NOT_HARD = ("-fno-lto", "-fembed-bitcode=off", "-fno-sanitize", "-fprofile-prefix-map=")


def paths_reach_object(argv: Sequence[str]) -> str | None:
    """Why the text's paths must stay in the key whatever else (None: they need not)."""
    debug = emits_debug_info(argv)
    for arg in argv[1:]:
        if arg.startswith(_NOT_HARD):
            continue
        for prefix, reason in _HARD:
            if arg.startswith(prefix):
                return f"{arg}: {reason}"
        if arg == "-v":
            return "-v: the compiler echoes its command line, maps and all, on stderr"
        if debug and arg == "-fopenmp":
            return "-fopenmp with debug info: clang's OpenMP location strings name the file"
    return None


_ASSEMBLER_DEBUG = ("-g", "--gdwarf", "--gen-debug", "--debug")


def emits_debug_info(argv: Sequence[str]) -> bool:
    """Whether the job records file names as debug info does: any ``-g`` option other
    than ``-g0``/``-ggdb0`` (kept conservative: ``-g -g0`` counts), a switch recorder
    (``-frecord-gcc-switches``, ``-frecord-command-line``), or the assembler's own debug
    info (``-Wa,-g``, ``-Wa,--gdwarf-5``...)."""
    args = list(argv[1:])
    for i, arg in enumerate(args):
        if arg.startswith("-g") and arg not in ("-g0", "-ggdb0"):
            return True
        if arg in ("-frecord-gcc-switches", "-frecord-command-line"):
            return True
        if assembler_debug(args, i):
            return True
    return False


def assembler_debug(args: Sequence[str], i: int) -> bool:
    """Whether ``args[i]`` asks the assembler for debug info of its own (``-Wa,-g``,
    ``-Wa,--gdwarf-5``, ``-Xassembler -g``...), which names the file it assembles."""
    arg = args[i]
    parts = arg[4:].split(",") if arg.startswith("-Wa,") else []
    if arg == "-Xassembler" and i + 1 < len(args):
        parts = [args[i + 1]]
    return any(part.startswith(_ASSEMBLER_DEBUG) for part in parts)


def records_switches(argv: Sequence[str]) -> bool:
    return any(a in ("-frecord-gcc-switches", "-frecord-command-line", "-grecord-gcc-switches",
                     "-grecord-command-line") for a in argv[1:])  # fmt: skip


@dataclass(frozen=True, slots=True)
class PrefixMap:
    option: str
    old: bytes
    new: bytes


def prefix_maps(argv: Sequence[str], options: tuple[str, ...] = MAP_OPTIONS) -> list[PrefixMap]:
    """The prefix maps of ``argv`` in order (a value without ``=`` maps to nothing: the
    compiler refuses it, and a failed compile is never cached). gcc splits OLD=NEW at
    the last ``=`` (checked: ``-ffile-prefix-map=/p=/zz/a=Y`` makes ``/p=/zz/a.c`` Y.c;
    split at the first, the key modelled another map: an eighth review)."""
    maps = []
    for arg in argv[1:]:
        for option in options:
            if arg.startswith(option):
                old, sep, new = arg[len(option) :].rpartition("=")
                if not sep:
                    old, new = new, ""
                maps.append(PrefixMap(option, _raw(old), _raw(new)))
    return maps


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def without_map_values(args: Sequence[str]) -> list[str]:
    """``args`` with each prefix map's value replaced by a placeholder, in place."""
    out = []
    for arg in args:
        option = next((o for o in MAP_OPTIONS if arg.startswith(o)), None)
        out.append(option + MAP_PLACEHOLDER if option is not None else arg)
    return out


def maps_keep_basenames(maps: Sequence[PrefixMap], paths: Sequence[bytes]) -> bool:
    """Whether no map can change a path's last component: every map that matches a
    path ends within its directory part (then the mapped path ends as it did)."""
    for path in paths:
        last_slash = path.rfind(b"/")
        for prefix_map in maps:
            if path.startswith(prefix_map.old) and len(prefix_map.old) > last_slash:
                return False
    return True


def gcc_remap(maps: Sequence[PrefixMap], path: bytes) -> bytes:
    """``path`` as gcc records it: the last map given whose old prefix starts it,
    replaced by its new prefix (gcc's ``remap_debug_filename``; checked by experiment)."""
    for prefix_map in reversed(maps):
        if path.startswith(prefix_map.old):
            return prefix_map.new + path[len(prefix_map.old) :]
    return path


def basename_rule(path: bytes) -> bytes:
    """No debug info: a path's basename is all of it that reaches an object."""
    return basename(path)


def mapped_rule(maps: Sequence[PrefixMap], cwd: bytes) -> PathRule:
    """Debug info with prefix maps (gcc): a path, its directory (with and without its
    slash) and, for a relative path, the same joined to the working directory, each as
    gcc maps it; the working-directory marker itself stays ``DIR//``, so its directory is
    among those forms."""

    def rule(path: bytes) -> bytes:
        forms = [path] if path.startswith(b"/") else [path, cwd + b"/" + path]
        out = []
        for form in forms:
            folder = directory(form)
            for part in (form, folder, folder + b"/", form.rstrip(b"/")):
                out.append(gcc_remap(maps, part))
        return b"\0".join(out)

    return rule


def relative_rule(cwd: bytes, cwd_marker: bytes) -> PathRule:
    """Debug info, no maps, sharing opted into: the working-directory marker becomes a
    placeholder, and a path that shares more than the root with the working directory
    is kept relative to it (``../src/a.c`` from ``/home/alice/p/build``); any other path
    as it is. Every form keeps the basename."""
    base = cwd.split(b"/")

    def rule(path: bytes) -> bytes:
        if path == cwd_marker:
            return b"\0cwd"
        parts = path.split(b"/")
        if not path.startswith(b"/"):
            return path
        common = 0
        for mine, theirs in zip(base, parts[:-1], strict=False):
            if mine != theirs:
                break
            common += 1
        if common < 2:  # (only the root in common: /usr/include/stdio.h)
            return path
        return b"\0cwd/" + b"/".join([b".."] * (len(base) - common) + parts[common:])

    return rule
