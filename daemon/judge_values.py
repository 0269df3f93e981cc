"""The judge's one rule for values: every value of every option, wherever it stands.

Each value an option takes (joined to it, after its ``=``, in the next argument, in a
piece of ``-Wa,`` or ``-Wl,``) and each argument carried to another program (``-Wa,``,
``-Xassembler``, ``-Wp,``, ``-Xpreprocessor``, ``-Xclang``, ``-mllvm``) is checked
here and nowhere else, by two rules that hold for every kind, then by its kind:

- **never** ``@`` **first**: gcc, clang, clang's front end, LLVM and GNU as all expand
  an argument that starts with ``@`` into the lines of that file, and the drivers hand
  values on as arguments of their own (``-I@FILE`` reaches the assembler as ``-I``
  ``@FILE``; ``-Wa,--defsym,@FILE`` as ``--defsym`` ``@FILE``);
- **a path only where the table says the value is one**, and each such kind says how
  it is made safe: ``output`` (replaced by the job's own file), ``specs`` (a root-owned
  file under a trusted directory), ``path`` (a name no tool opens when compiling a
  preprocessed file: tests/integration/test_judge_differential.py gives each one a
  path outside the job and watches every tool with strace). A ``define`` is a name
  (a C or assembler identifier) and text; a ``linker`` option is never sent on (no
  link runs under ``-c``: daemon/canonical.py). Every other kind is a word: no ``/``,
  no ``..``, no ``~``.

The functions answer with the reason a value is refused, or None: the judge raises.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from daemon.languages import PREPROCESSED_LANGUAGE
from daemon.logged import quoted
from wire.args import Form, OptionSpec

NESTED_KINDS = ("as", "cc1", "llvm", "cpp")
"""Kinds whose value is arguments for another program, judged by its part of the table."""
PATH_KINDS = frozenset({"path", "output", "specs"})
"""Kinds whose value may be a path: the table says so, and the kind says how it is safe."""


_WORD_PATTERNS = {
    "int": re.compile(r"[+-]?[0-9]+"),
    "word": re.compile(r"[A-Za-z0-9_.+-]+"),
    "list": re.compile(r"[A-Za-z0-9_.+=-]+(?:[,:][A-Za-z0-9_.+=-]*)*"),
    "cpu": re.compile(r"[A-Za-z0-9_.+-]+"),
    "warning": re.compile(r"[A-Za-z0-9_.+=-]*"),
    "target": re.compile(r"[A-Za-z0-9_.,:+=-]*"),
    # Linux targets of the architectures clang 14 assembles itself (distcc's client adds
    # -target HOST-TRIPLE to every clang job). Any other system or architecture lets
    # the target choose the assembler clang runs from PATH (T-as for SPARC, LoongArch,
    # AIX, NaCl..., xcc, orbis-as, nas: found by security reviews); proved under the
    # real clang's -### (tests/integration/test_judge_targets.py).
    "triple": re.compile(
        r"(?:x86_64|i[3-6]86|aarch64(?:_be)?|arm[a-z0-9]*|thumb[a-z0-9]*|riscv(?:32|64)"
        r"|powerpc(?:64)?(?:le)?|ppc(?:64)?(?:le)?|s390x|mips[a-z0-9]*)"
        r"(?:-(?!scei|sie)[A-Za-z0-9_]+)?-linux"
        # (m68k is not taken: clang 14 crashed on a plain _Thread_local there and ran
        # llvm-symbolizer, an eleventh review.) The environments of Linux (an object
        # format there, -linux-macho, made clang 14 crash, run llvm-symbolizer and leave
        # its reproducer in TMPDIR, or plan an assembler from PATH: a tenth review)
        r"(?:-(?:gnu(?:abin32|abi64|eabi|eabihf|x32|ilp32)?|musl(?:eabi|eabihf)?"
        r"|android(?:eabi)?[0-9]*|eabi(?:hf)?))?"
    ),
}
_DESCRIBE = {
    "int": "a number",
    "word": "a word (letters, digits, _ . + -)",
    "list": "words separated by , or :",
    "cpu": "a CPU name",
    "warning": "a warning's name",
    "target": "a target option's value",
    "triple": "a Linux target of an architecture clang assembles itself "
    "(ARCH[-VENDOR]-linux[-gnu*|-musl*|-android*|-eabi*]: others make clang run an "
    "assembler from PATH)",
}
_DEFINE = re.compile(r"[A-Za-z_$][A-Za-z0-9_$.]*(?:\([A-Za-z0-9_, .]*\))?(?:=.*)?")
"""NAME, NAME=TEXT or NAME(ARGS)=TEXT: a macro (``-D``) or an assembler symbol
(``--defsym``). Starting with an identifier, it is never a path, an option or @FILE;
the text is a macro's body or a symbol's value, which no tool opens."""

RESPONSE_FILE = "@FILE reads more arguments from a file on the server"
_DASH_VALUES = frozenset({"-Xlinker"})
"""Separate values that may start with '-' (the linker's options: no link runs)."""


def argument_refusal(arg: str) -> str | None:
    """Why an argument of any program (the driver's, or one carried to the assembler,
    the preprocessor, clang's front end or LLVM) is refused, or None."""
    if "\0" in arg:
        return "an argument holds a NUL byte"
    if arg.startswith("@"):
        return f"{quoted(arg)} is refused: {RESPONSE_FILE}"
    return None


def response_file_refusal(value: str, shown: str, where: str = "") -> str | None:
    """Why a value (of any option: a piece of ``-Wl,`` too) is refused as @FILE, or None."""
    if any(piece.startswith("@") for piece in value.split(",")):
        return f"{quoted(shown)}{where}: a value that starts with '@' is refused ({RESPONSE_FILE})"
    return None


def names_a_path(value: str) -> bool:
    """Whether a tool could take ``value`` for a file name outside the job: a directory
    in it, a parent, or a home."""
    return "/" in value or ".." in value or value.startswith("~")


def value_refusal(
    spec: OptionSpec,
    value: str,
    shown: str,
    *,
    separate: bool,
    where: str = "",
    specs_check: Callable[[str], str | None] | None = None,
) -> str | None:
    """Why ``value``, given to the option of table entry ``spec`` (in the next argument
    when ``separate``), is refused, or None. ``shown`` is the option as written,
    ``where`` says which program it is passed to."""
    kind = spec.kind
    if "\0" in value:
        return "an argument holds a NUL byte"
    reason = response_file_refusal(value, shown, where)
    if reason is not None:
        return reason
    if (
        value.startswith("-")
        and kind not in NESTED_KINDS
        and spec.spelling not in _DASH_VALUES
        and (separate or spec.form is Form.EITHER)
    ):
        # A value that looks like an option: if the scanner and the compiler ever
        # disagree on where an option ends, this is where an option would hide.
        return f"{quoted(shown)}{where}: a value that starts with '-' is refused"
    if kind in NESTED_KINDS or kind in ("path", "output", "linker"):
        return None  # (nested: each piece is then judged as that program's argument)
    if kind == "specs":
        reason = specs_check(value) if specs_check is not None else "no specs file is trusted"
        return None if reason is None else f"{quoted(shown)} is refused: {reason}"
    if kind == "define":
        if not _DEFINE.fullmatch(value):
            return f"{quoted(shown)}{where}: its value must be a NAME or NAME=VALUE (a definition)"
        return None
    if kind == "language":
        if value not in PREPROCESSED_LANGUAGE and value != "none":
            return f"{quoted(shown)}: only C, C++ and Objective-C are compiled here"
        return None
    if kind.startswith("choice:"):
        choices = kind[len("choice:") :]
        if value not in choices.split("|"):
            return f"{quoted(shown)}{where}: {quoted(value)} is not one of {choices}"
        return None
    pattern = _WORD_PATTERNS.get(kind)
    if pattern is None:
        return f"{quoted(shown)}: the option table has no rule for {kind!r} values"
    if not pattern.fullmatch(value) or names_a_path(value):
        return (
            f"{quoted(shown)}{where} is refused: its value must be {_DESCRIBE[kind]}"
            " (a path or a program is never one)"
        )
    if kind == "cpu" and value.lower() == "native":
        return f"{quoted(shown)} would mean the server's CPU, not yours"
    return None
