"""Where a preprocessed text names files: its line markers (pure).

A text names the files it came from only in its line markers, ``# 12 "/home/alice/p/a.c"
1 3`` (gcc and clang both read ``#line 12 "..."`` too), and with gcc's ``-g`` (or
``-fworking-directory``) the second line is one more, ``# 1 "/home/alice/p//"``: the
working directory, which gcc records as the object's ``DW_AT_comp_dir``. :func:`scan`
finds them in one pass and says whether a key may leave their paths out (docs/cache.md,
"Keys that do not depend on the checkout", has the rules and the experiments behind
them). What a key makes of each path is :func:`cache.path_rules.normalised_paths`:
the hook pump mode, which sends file names instead of a text, is to reuse.

A text keeps its paths in its key (an *obstacle*) when the compiler could turn them into
something other than the markers say: it does not start with a marker; it names
``__FILE__``, ``__BASE_FILE__``, ``__FILE_NAME__``, ``__builtin_FILE`` or
``__builtin_source_location`` (clang expands macros in a preprocessed file, and both
compilers evaluate the builtins from the markers: the object then holds the path);
it could spell one of those across a line splice or a trigraph, or build one with a
``#define`` (a ``%:`` digraph, a comment after ``#``, ``#include``, ``__has_include``, whose
answer clang would look up from the server, are refused with it);
it holds a raw string literal (``R"(...)"`` may hold a line that looks like a marker but
is the string's text, which the object holds whole);
it has a carriage return (a line end the scanner does not split on); a path holds a
backslash (an escape: two spellings of one name); or a line starts like a marker that
the scanner cannot read.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from array import array
from collections.abc import Iterator
from dataclasses import dataclass

_WS = rb"[ \t\f\v]"
_BODY = (
    _WS
    + rb"*(?:line"
    + _WS
    + rb"+)?[0-9]+"
    + _WS
    + (rb'+"((?:[^"\\\n]|\\[^\n])*)"[ \t\f\v0-9]*(?=\n|\Z)')
)
_FIRST = re.compile(rb"#" + _BODY)
_LINES = re.compile(rb"\n#(?:" + _BODY + rb"|(" + _WS + rb"*(?:line\b|[0-9])))")
"""A marker (group 1: its path), or a line that starts like one but is not (group 2).
Each pattern here starts with a literal, which the regex engine finds fast (patterns
that start with a choice of characters are several times slower, measured)."""


class _AtLineStart:
    """A pattern that counts only at the start of a line (blanks before it): searched
    from its literal ``#``, fast, and checked where it is found."""

    def __init__(self, pattern: re.Pattern[bytes]) -> None:
        self.pattern = pattern

    def finditer(self, text: bytes) -> Iterator[re.Match[bytes]]:
        # Each line is looked at once, up to its first match: a later match on the same
        # line has that match's # before it, no blank (looking back from every match
        # was quadratic: one line of ``#if #if ...``, 1.8 MB, took 22 s of CPU before
        # any slot; a sixteenth review).
        line = previous = 0
        examined = -1
        for found in self.pattern.finditer(text):
            at = found.start()
            newline = text.rfind(b"\n", previous, at)
            if newline >= 0:
                line = newline + 1
            previous = at
            if line == examined:
                continue
            examined = line
            if not text[line:at].strip(b" \t\f\v"):
                yield found

    def search(self, text: bytes) -> re.Match[bytes] | None:
        return next(self.finditer(text), None)


_CONDITIONAL = _AtLineStart(
    re.compile(
        rb"#" + _WS
        + rb"*(?:if|ifdef|ifndef|elif|elifdef|elifndef|else|endif|undef|assert|unassert)\b"
    )
)  # fmt: skip
"""A conditional directive: clang evaluates it in a preprocessed text, and with
``__has_include`` it asks the server's file system (a tenth review)."""
_SPLICE = re.compile(rb"\\" + _WS + rb"*\n")
_COMMENT = re.compile(rb"/\*")
_DIRECTIVE_WORD = re.compile(rb"#" + _WS + rb"*(?:define|_*include|import|embed|/\*)")
_DIGRAPH = re.compile(rb"%:")  # the digraph of #
_ASM_READ = re.compile(rb"(?i:\.inc(?:bin|lude))")
"""``.incbin`` and ``.include`` in an asm, any case: the assembler reads a file into the
object (the job's own text has a name the source cannot know: server/runner.py)."""
_TRIGRAPH = re.compile(rb"\?\?[=/'()!<>-]")
"""Any trigraph (??= is #, ??/ a backslash: with -trigraphs or a strict -std, clang
reads ??=define in a preprocessed text, a sixth review)."""
_OBSTACLES = (
    # __FILE__, __FILE_NAME__, __BASE_FILE__, __builtin_FILE (found by FILE, which is rare)
    re.compile(rb"FILE(?:(?<=__FILE)(?:__|_NAME__)|(?<=__BASE_FILE)__|(?<=__builtin_FILE))"),
    _SPLICE,
    _COMMENT,  # (hand-made: below)
    _DIRECTIVE_WORD,
    _CONDITIONAL,
    _DIGRAPH,
    _ASM_READ,
    _TRIGRAPH,
    # A raw string literal (R"...", u8R, uR, UR, LR; C++11, and C with GNU extensions):
    # the only token that spans lines, so a line in it that looks like a marker is the
    # string's text, which the object holds whole (found by a review). Not after an
    # identifier's character ("ERROR" ends in one; an identifier's is not raw), and
    # with its delimiter and "(" (gcc and clang refuse delimiters over 16 characters;
    # up to 64 are taken here: the string "R" in <regex> is not one).
    re.compile(
        rb'R"(?:(?<![A-Za-z0-9_$]R")|(?<=[^A-Za-z0-9_$][uUL]R")|(?<=[^A-Za-z0-9_$]u8R"))'
        rb"[^ ()\\\t\v\f\n]{0,64}\("
    ),
)
_SEQUENCES = (b"__builtin_source_location", b"__has_include", b"__has_embed", b"\r", b"\0")
_HAND_MADE = (
    re.compile(rb"\r"),  # (a line end gcc and clang read, that a scan of lines misses)
    # (a preprocessor expands these; clang expands them in a preprocessed text, with the
    # path of a marker the text chose: a thirteenth review built .incbin so)
    re.compile(rb"__(?:FILE|FILE_NAME|BASE_FILE)__"),
    _COMMENT,  # (none in cpp's output; gas deletes the one in .inc/**/bin)
    _SPLICE,
    _DIRECTIVE_WORD,
    _CONDITIONAL,
    re.compile(rb"__has_(?:include|embed)"),
    _DIGRAPH,
    _TRIGRAPH,
    _ASM_READ,
    re.compile(rb"\0"),
)
"""What no client's preprocessor writes, and makes a text's result depend on more than
the text: clang runs directives and splices in a preprocessed text (it built
``__TIME__`` from ``__TI`` and ``ME__``, and read a server file by ``#include``: an
eighth review), and an assembler's ``.incbin``/``.include`` (any case) read the server's
files. Such a text is never cached (cache/keys.py), its paths kept in any case."""
_DIRECTIVE = re.compile(
    rb"\.(?i:inc(?:bin|lude)|macro|irpc?|irepc?|rep|altmacro|purgem|exitm|endm)"
)
"""The assembler's directives that read a file, and those that build text as it runs
(macros and loops: ``.incb\\()in``; ``.rep`` is clang's ``.rept``), in any case."""
_BEFORE_MEMBER = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_$")
_NUMERIC_ESCAPE = re.compile(
    rb"\\(?:([0-7]{1,3})|x([0-9A-Fa-f]+)|u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8})|([xouN])\{)"
)
_SPELLED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz.%")
"""A letter, a dot or ``%`` by its number (gcc keeps the low byte of one out of range):
how a directive's name, or an asm operand glued to one, hides from the bytes."""
_OPEN_END = re.compile(
    rb'\.[A-Za-z]{0,8}(?:\)[^ ()\\\t\v\f\n"]{0,16})?"'
    rb'(?=[ \t\n\v\f]*(?:["/#\\uULR_]|[\x80-\xff]))'
)
"""A literal (a raw one too) that ends in a dot and up to eight letters, with another
literal possibly after it (a quote, a comment, a ``#`` line, a prefix, a splice, a
Unicode blank, a name: clang joins ``__FUNCTION__`` in MS mode): the compiler joins
them, and ``".inc" "bin"`` is ``.incbin``."""
_DOT = 0x2E
_NOT_A_NAME_AFTER = frozenset(b"\\%[")
_GLUED_DOT = re.compile(rb"\.[A-Za-z]{0,8}[%{|}]")
"""A dot (and letters) before an asm operand or a dialect brace: ``.%c0`` prints a
symbol's name after it, gcc's ``%~`` prints ``i`` (``.incb%~n``), and ``{}`` and
``{a|b}`` vanish or choose before gas reads ``.inc{}bin`` (a thirteenth review)."""
_NAME_OPERAND = re.compile(rb"%[cPpa](?:[0-9]+|\[[A-Za-z0-9_]*\])")
_GLUED_AFTER_ONE = frozenset(
    bytes([byte]) for byte in b"%ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_.${|}"
)
"""An asm operand that prints a symbol's bare name (``%c``, ``%P``, ``%p``, ``%a``) glued
to another or to letters: ``%c0%c1`` or ``%c0bin`` with the label ``".inc"``."""
_PRAGMA = _AtLineStart(re.compile(rb"#" + _WS + rb"*(pragma|ident|sccs)\b([^\n]*)"))
_HARMLESS_PRAGMA = re.compile(
    rb"[ \t]*(?:GCC[ \t]+(?:push_options|pop_options|target|optimize|diagnostic|visibility"
    rb"|ivdep|unroll|poison)|clang[ \t]+(?:diagnostic|loop)|pack|omp|STDC|once|weak"
    rb"|redefine_extname)\b"
)
"""Pragmas that read no file and give the assembler no string (options, diagnostics,
target, visibility, packing, loops; ``weak`` and ``redefine_extname`` take names)."""
_COMMENT_BEFORE_DIRECTIVE = re.compile(rb"\*/" + _WS + rb"*#")


_TYPE_NAMES = (b"__PRETTY_FUNCTION__", b"__FUNCSIG__", b"__builtin_dump_struct",
               b"__builtin_FUNCSIG")  # fmt: skip
"""What makes clang write a type's name into the object as text: a lambda's or an
unnamed type's name is ``(lambda at PATH:LINE:COL)``, PATH as a marker gives it (gcc
writes ``<lambda()>``). Found by a review: assert() in a template of a lambda."""
_SPACE_HASH = re.compile(rb"#(?<=[ \t\f\v]#)")
_INDENTED = re.compile(rb"\n" + _WS + rb"+#")
"""A directive after blanks (a marker the scan would miss): looked for only where a
blank precedes a ``#`` at all (rare), as that is slower."""
WORKING_DIRECTORY_SUFFIX = b"//"
NO_LEADING_MARKER = "the text does not start with a line marker"
MAX_MARKERS = 1 << 19
"""Line markers a text's key follows at most (a preprocessed translation unit of a
large C++ project has some tens of thousands). Past it, or past :data:`MAX_PATHS`
files, the text is compiled but never cached, and its scan keeps nothing: a review's
48 MB of markers alone made the key's bookkeeping take 1.3 GB, before any slot."""
_DEVICES = (b"/dev", b"/proc", b"/sys")
MAX_PATHS = 1 << 16
"""Distinct files a text's markers may name for its key to follow them."""
"""(Then the object names the file the server wrote the text to, whose name is its own.)"""


@dataclass(frozen=True, slots=True)
class MarkedText:
    """A text's line markers: where each one's path is, and which path it is."""

    spans: tuple[tuple[int, int], ...]
    """Start and end of each marker's path (between its quotes), in order."""
    occurrences: array[int]
    """For each marker, the index of its path in :attr:`paths`."""
    paths: tuple[bytes, ...]
    """The distinct paths, in the order they first appear."""
    working_directory: int | None
    """The index in :attr:`paths` of gcc's working-directory marker (``DIR//`` on the
    second line), if the text has one."""
    obstacle: str | None
    """Why the paths must stay in the text's key as they are (None: they need not)."""
    hand_made: str | None = None
    """Why no client's preprocessor wrote the text, and its result must not be cached
    (:data:`_HAND_MADE`; None: it may be)."""
    assembler_reads: str | None = None
    """Why an assembler could read a file into the object (:func:`assembler_reads`;
    None: it cannot): its result must not be cached."""
    names_types: bool = False
    """The text may have clang write type names, with the paths of lambdas and unnamed
    types, into the object (:data:`_TYPE_NAMES`): paths reach clang's objects."""

    def segments(self, text: bytes) -> bytes:
        """sha256 over everything but the paths: each stretch between two paths framed
        by its length, so that the text is the stretches and the paths interleaved and
        nothing else (one pass over the text, no copy)."""
        h = hashlib.sha256(b"distlb-text-segments-v1\0")
        view = memoryview(text)
        position = 0
        for start, end in self.spans:
            h.update((start - position).to_bytes(8, "big"))
            h.update(view[position:start])
            position = end
        h.update((len(text) - position).to_bytes(8, "big"))
        h.update(view[position:])
        return h.digest()


def scan(text: bytes) -> MarkedText:
    """The markers of ``text`` and whether its key may normalise their paths (one pass
    for the markers, one for the obstacles; both in C)."""
    spans: list[tuple[int, int]] = []
    obstacle = None
    first = _FIRST.match(text)
    if first is None:
        obstacle = NO_LEADING_MARKER
    else:
        spans.append(first.span(1))
    working_directory_at = first.end() if first is not None else -1
    second_is_directory = False
    for found in _LINES.finditer(text):
        if found.group(2) is not None:
            obstacle = obstacle or "a line that starts like a line marker but is not one"
            continue
        if len(spans) >= MAX_MARKERS:
            return _too_many(text)
        spans.append(found.span(1))
        if found.start() == working_directory_at:
            second_is_directory = found.group(1).endswith(WORKING_DIRECTORY_SUFFIX)
    index: dict[bytes, int] = {}
    occurrences = array("I")
    for start, end in spans:
        occurrences.append(index.setdefault(text[start:end], len(index)))
        if len(index) > MAX_PATHS:
            return _too_many(text)
    paths = tuple(index)
    if obstacle is None:
        obstacle = _obstacle(text, paths)
    hand_made = None
    if obstacle is not None:
        for pattern in _HAND_MADE:
            made = pattern.search(text)
            if made is not None:
                hand_made = f"the text holds {made.group()!r}"
                break
    if hand_made is None and any(_names_a_device(p) for p in paths):
        # (a diagnostic quotes a line of the file a marker names: of /dev/urandom, other
        # bytes each compile, which a hit would replay; a fourteenth review)
        hand_made = "a line marker names a device or a process's file"
    return MarkedText(
        spans=tuple(spans),
        occurrences=occurrences,
        paths=paths,
        working_directory=occurrences[1] if second_is_directory else None,
        obstacle=obstacle,
        names_types=obstacle is None and any(name in text for name in _TYPE_NAMES),
        hand_made=hand_made,
        assembler_reads=assembler_reads(text),
    )


def _names_a_device(path: bytes) -> bool:
    """Whether a marker's path may name a device or a process's file, however spelled
    (``../dev/urandom`` from the job's directory, ``//dev``, ``/tmp/../dev``: a
    sixteenth review), as the compiler would open it from its working directory."""
    normal = b"/" + posixpath.normpath(posixpath.join(b"/tmp", path)).lstrip(b"/")
    return any(normal == top or normal.startswith(top + b"/") for top in _DEVICES)


def _too_many(text: bytes) -> MarkedText:
    """A text with more markers or files than a key follows: hashed whole, never cached."""
    return MarkedText(
        spans=(), occurrences=array("I"), paths=(), working_directory=None,
        obstacle=f"more than {MAX_MARKERS:,} line markers or {MAX_PATHS:,} files",
        hand_made=f"more than {MAX_MARKERS:,} line markers or {MAX_PATHS:,} files named",
        assembler_reads=assembler_reads(text),
    )  # fmt: skip


def _is_member(text: bytes, dot: int) -> bool:
    """The dot at ``dot`` is no directive's: it follows a name or a number (``opts.macro``,
    ``1.e``) or another dot (``args...}``), not an escape (``\\n.macro``, ``\\x0a.irp``)
    nor an asm operand (``%0.inc``, ``%[x].irp``: it prints a symbol's name, which may
    end its statement)."""
    start = dot
    while start > 0 and text[start - 1] in _BEFORE_MEMBER:
        start -= 1
    if start == dot:
        return dot > 0 and text[dot - 1] == _DOT
    return not (start > 0 and text[start - 1] in _NOT_A_NAME_AFTER)


def assembler_reads(text: bytes) -> str | None:
    """Why the assembler could be made to read a file, or build text as it runs, from
    this text (None: it cannot): the object would hold a file of the server's
    (``/usr/lib/os-release``), which no key covers. Three reviews spelled ``.incbin``
    past a search for it (joined literals across comments, ``#`` lines and Unicode
    blanks, a dot by its number, gas macros, glued asm operands, raw strings, ``\r``
    line ends, section names, ``fentry_name``, MS ``_asm``), so this asks not where a
    string goes (any may reach the assembler) but whether a directive's name can be
    spelled at all: written out (not as a member, ``opts.macro``); a letter, dot or
    ``%`` given by its number; a literal that ends in a dot and letters with another
    possibly joined to it; a dot glued to an asm operand. And pragmas are only those
    that read nothing (a comment before ``#``, which could hide one, is refused here;
    a ``\r`` line end is hand-made)."""
    for found in _DIRECTIVE.finditer(text):
        if not _is_member(text, found.start()):
            return f"the text spells {found.group()!r} (an assembler's file or macro)"
    for escape in _NUMERIC_ESCAPE.finditer(text):
        octal, hexadecimal, short, long, delimited = escape.groups()
        if delimited is not None:
            return f"the text holds a delimited escape ({escape.group()!r})"
        value = int(octal, 8) if octal else int(hexadecimal or short or long, 16)
        if value & 0xFF in _SPELLED:
            return f"the text spells {chr(value & 0xFF)!r} by its number ({escape.group()!r})"
    for end in _OPEN_END.finditer(text):
        if not _is_member(text, end.start()):
            return f"a literal ends in {end.group()[:-1]!r} and may be joined to the next"
    for glued in _GLUED_DOT.finditer(text):
        if not _is_member(text, glued.start()):  # (not pair.second})
            return f"an asm operand or dialect brace glued to a name ({glued.group()!r})"
    for operand in _NAME_OPERAND.finditer(text):
        at, after = operand.start(), operand.end()
        if (at and text[at - 1] in _BEFORE_MEMBER) or text[after : after + 1] in _GLUED_AFTER_ONE:
            return f"an asm operand glued to a name ({operand.group()!r})"
    for pragma in _PRAGMA.finditer(text):
        if pragma.group(1) != b"pragma":  # (#ident, #sccs: a string for the assembler)
            return f"the text holds {pragma.group().strip()[:60]!r}"
        if _HARMLESS_PRAGMA.match(pragma.group(2)) is None:
            return f"a pragma that may read a file: {pragma.group().strip()[:60]!r}"
    if b"_Pragma" in text or b"__pragma" in text:
        return "the text holds _Pragma or __pragma (a preprocessor writes #pragma lines)"
    if _COMMENT_BEFORE_DIRECTIVE.search(text) is not None:
        return "a directive after a comment (clang runs it; no preprocessor writes one)"
    return None


_UNPRINTABLE = re.compile(rb"[^\x20-\x7e]")


def _obstacle(text: bytes, paths: tuple[bytes, ...]) -> str | None:
    for pattern in _OBSTACLES:
        found = pattern.search(text)
        if found is not None:
            return f"the text holds {found.group()!r}"
    for sequence in _SEQUENCES:
        if sequence in text:
            return f"the text holds {sequence!r}"
    if _SPACE_HASH.search(text) is not None and (indented := _INDENTED.search(text)):
        return f"the text holds {indented.group()!r}"
    if any(b"\\" in path for path in paths):
        return "a line marker's path holds an escape"
    if any(_UNPRINTABLE.search(path) for path in paths):
        # (gcc and clang write such a byte in octal in a fix-it's path, which a hit's
        # replay could not find to rename: Alice's directory reached Bob; a fifteenth
        # review)
        return "a line marker's path holds a byte outside printable ASCII"
    return None
