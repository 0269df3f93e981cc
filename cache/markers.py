"""Where a preprocessed text names files: its line markers (pure).

A text names the files it came from only in its line markers, ``# 12 "/home/alice/p/a.c"
1 3`` (gcc and clang both read ``#line 12 "..."`` too), and with gcc's ``-g`` (or
``-fworking-directory``) the second line is one more, ``# 1 "/home/alice/p//"``: the
working directory, which gcc records as the object's ``DW_AT_comp_dir``. :func:`scan`
finds them in one pass and says whether a key may leave their paths out (docs/cache.md,
"Keys that do not depend on the checkout", has the rules and the experiments behind
them). What a key makes of each path is :func:`normalised_paths`: the hook pump mode,
which sends file names instead of a text, is to reuse.

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
import re
from array import array
from collections.abc import Callable, Sequence
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

    def search(self, text: bytes) -> re.Match[bytes] | None:
        for found in self.pattern.finditer(text):
            line = text.rfind(b"\n", 0, found.start()) + 1
            if not text[line : found.start()].strip(b" \t\f\v"):
                return found
        return None


_CONDITIONAL = _AtLineStart(
    re.compile(
        rb"#" + _WS
        + rb"*(?:if|ifdef|ifndef|elif|elifdef|elifndef|else|endif|undef|assert|unassert)\b"
    )
)  # fmt: skip
"""A conditional directive: clang evaluates it in a preprocessed text, and with
``__has_include`` it asks the server's file system (a tenth review)."""
_OBSTACLES = (
    # __FILE__, __FILE_NAME__, __BASE_FILE__, __builtin_FILE (found by FILE, which is rare)
    re.compile(rb"FILE(?:(?<=__FILE)(?:__|_NAME__)|(?<=__BASE_FILE)__|(?<=__builtin_FILE))"),
    re.compile(rb"\\" + _WS + rb"*\n"),  # a line splice
    re.compile(rb"#" + _WS + rb"*(?:define|include|import|embed|/\*)"),
    _CONDITIONAL,
    re.compile(rb"%:"),  # the digraph of #
    # .incbin and .include in an asm, any case: the assembler reads a file into the
    # object (the job's own text has a name the source cannot know: server/runner.py)
    re.compile(rb"(?i:\.inc(?:bin|lude))"),
    # any trigraph (??= is #, ??/ a backslash: with -trigraphs or a strict -std, clang
    # reads ??=define in a preprocessed text, a sixth review)
    re.compile(rb"\?\?[=/'()!<>-]"),
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
    re.compile(rb"\\" + _WS + rb"*\n"),
    re.compile(rb"#" + _WS + rb"*(?:define|include|import|embed|/\*)"),
    _CONDITIONAL,
    re.compile(rb"__has_(?:include|embed)"),
    re.compile(rb"%:"),
    re.compile(rb"\?\?[=/'()!<>-]"),
    re.compile(rb"(?i:\.inc(?:bin|lude))"),
    re.compile(rb"\0"),
)
"""What no client's preprocessor writes, and makes a text's result depend on more than
the text: clang runs directives and splices in a preprocessed text (it built
``__TIME__`` from ``__TI`` and ``ME__``, and read a server file by ``#include``: an
eighth review), and an assembler's ``.incbin``/``.include`` (any case) read the server's
files. Such a text is never cached (cache/keys.py), its paths kept in any case."""
_SEP = rb"[ \t\n]*"
_SAFE_TEMPLATE = rb'"(?:[A-Za-z0-9_ ,;%$()\[\]:*+=!<>{}|&~^@#?\'-]|\\[nt])*"'
"""A literal an asm statement may give the assembler in a cached job: no dot (no
directive can start), no escape but ``\n`` and ``\t``, no quote."""
_ASM_FORM = re.compile(
    rb"(?:" + _SEP + rb"(?:volatile|__volatile__|__volatile|goto|inline|__inline__|__inline)\b)*"
    + _SEP + rb"\(" + _SEP + _SAFE_TEMPLATE + rb"(?:" + _SEP + _SAFE_TEMPLATE + rb")*" + _SEP
    + rb"[:)]"
)  # fmt: skip
"""``asm`` as a cached job may use it: a label (``__asm__ ("" "__isoc99_fscanf")``) or
a template of safe literals, then its operands (``:``) or its end."""
_WORD_IN_PARENS = re.compile(rb"\(" + _SEP + rb'[A-Za-z_][A-Za-z0-9_]*(?!["A-Za-z0-9_])')
"""``(`` then a word that is no string's prefix (``R"``, ``u8"``, ``L"``)."""
_ASM_WORDS = re.compile(
    rb"(?:" + _SEP + rb"(?:volatile|__volatile__|__volatile|goto|inline|__inline__|__inline)\b)*"
    + _SEP
)  # fmt: skip
_NAMED_FORM = re.compile(_SEP + rb"\(" + _SEP + rb'"[A-Za-z0-9_.$@]*"' + _SEP + rb"[,)]")
"""A section's, an alias's or a symbol version's name as a cached job may give it: one
plain literal of a name's characters (no blank, newline, ``;``, ``#`` or escape: nothing
that starts another statement for the assembler)."""
_CARRIER_WORDS = (b"asm", b"section", b"alias", b"weakref", b"ifunc", b"symver")
"""Words whose strings reach the assembler as written (each also between ``__``)."""
_NAME = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_$")
_ODD = frozenset(
    [b"#", b"\f", b"\v", b"\r", b"\\", *(bytes([byte]) for byte in range(0x80, 0x100))]
)
"""What may stand between ``asm`` and its ``(`` only in a text written to hide one (a
``#`` line, another blank, a Unicode one, a splice)."""
_PRAGMA = re.compile(rb"\n" + _WS + rb"*#" + _WS + rb"*(pragma|ident|sccs)\b([^\n]*)")
_HARMLESS_PRAGMA = re.compile(
    rb"[ \t]*(?:GCC[ \t]+(?:push_options|pop_options|target|optimize|diagnostic|visibility"
    rb"|ivdep|unroll|poison)|clang[ \t]+(?:diagnostic|loop)|pack|omp|STDC|once|weak"
    rb"|redefine_extname)\b"
)
"""Pragmas that give the assembler no string (their words set options, diagnostics,
visibility, packing, loops; ``weak`` and ``redefine_extname`` take identifiers)."""


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
        spans.append(found.span(1))
        if found.start() == working_directory_at:
            second_is_directory = found.group(1).endswith(WORKING_DIRECTORY_SUFFIX)
    index: dict[bytes, int] = {}
    occurrences = array("I")
    for start, end in spans:
        occurrences.append(index.setdefault(text[start:end], len(index)))
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


def assembler_reads(text: bytes) -> str | None:
    """Why an assembler could be given something other than plain code and names by
    this text (None: it cannot), and its object then hold a file of the server's: an
    ``.incbin`` spelled past any scan of the bytes (a tenth and an eleventh review
    joined literals across comments, ``#`` lines, pragmas and Unicode blanks, gave a dot
    by its number, built a name with a gas macro or a glued asm operand, used raw
    strings). So a cached job's text is held to shapes, not searched for spellings:
    every ``asm`` is a label or a template of literals without a dot or an escape but
    ``\n`` and ``\t`` (no directive can start), every ``section``, ``alias``,
    ``weakref``, ``ifunc`` and ``symver`` with a string names one plain name, every
    pragma is one that gives the assembler nothing, and nothing else (a comment, a
    ``#`` line, another blank) stands where the shape wants its parts. Real headers
    keep to these (glibc's and libstdc++'s, preprocessed by gcc and clang: tested)."""
    for word in _CARRIER_WORDS:
        at = text.find(word)
        while at >= 0:
            start, end = at, at + len(word)
            at = text.find(word, at + 1)
            if start >= 2 and text.startswith(b"__", start - 2):
                start -= 2
            if text.startswith(b"__", end):
                end += 2
            if (start and text[start - 1] in _NAME) or (end < len(text) and text[end] in _NAME):
                continue  # (part of a longer name: wasm, asmlinkage, sections)
            if word == b"asm":
                after = _ASM_WORDS.match(text, end)
                rest = text[after.end() if after else end :][:2]
                if not (rest[:1] == b"(" or rest in (b"//", b"/*") or rest[:1] in _ODD):
                    continue  # (the word, not a statement: asm/socket.h, "inline asm is")
                if rest[:1] == b"(" and _WORD_IN_PARENS.match(text, after.end() if after else end):
                    continue  # ("asm (as written)": a statement's "(" holds a string first)
                if _ASM_FORM.match(text, end) is None:
                    return f"an asm statement of another shape at byte {start}"
            else:
                rest = text[end : end + 64].lstrip(b" \t\n")
                if not rest.startswith(b"(") or rest[1:].lstrip(b" \t\n")[:1].isalnum():
                    continue  # (a word or a call, not a name for the assembler)
                if _NAMED_FORM.match(text, end) is None:
                    return f"{word.decode()}(...) gives the assembler more than a name"
    for pragma in _PRAGMA.finditer(b"\n" + text if text.startswith(b"#") else text):
        if pragma.group(1) != b"pragma":  # (#ident, #sccs: a string for the assembler)
            return f"the text holds {pragma.group().strip()[:60]!r}"
        if _HARMLESS_PRAGMA.match(pragma.group(2)) is None:
            return f"a pragma that may reach the assembler: {pragma.group().strip()[:60]!r}"
    if b"_Pragma" in text:
        return "the text holds _Pragma (a preprocessor writes #pragma lines)"
    return None


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
    return None


def basename(path: bytes) -> bytes:
    return path.rsplit(b"/", 1)[-1]


def directory(path: bytes) -> bytes:
    """A path's directory part, without the slash (``b""`` for a bare name)."""
    return path.rsplit(b"/", 1)[0] if b"/" in path else b""


def working_directory(marked: MarkedText) -> bytes | None:
    """The directory gcc's working-directory marker names (``DIR//`` is ``DIR``)."""
    if marked.working_directory is None:
        return None
    return marked.paths[marked.working_directory].rstrip(b"/") or b"/"


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
