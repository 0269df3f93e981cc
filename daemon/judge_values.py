"""The judge's value check: what each kind of value in the option table accepts.

Each value an option takes (joined to it, or in the next argument) is checked here by
the kind its table entry gives it, and each whole argument by the rules that hold for
every argument of every program (no NUL, no @FILE). The functions answer with the
reason a value is refused, or None: the judge raises.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from wire.args import Form, OptionSpec

NESTED_KINDS = ("as", "cc1", "llvm", "cpp")
"""Kinds whose value is arguments for another program, judged by its part of the table."""

PREPROCESSED_LANGUAGE = {
    "c": "cpp-output",
    "cpp-output": "cpp-output",
    "c++": "c++-cpp-output",
    "c++-cpp-output": "c++-cpp-output",
    "objective-c": "objective-c-cpp-output",
    "objc-cpp-output": "objective-c-cpp-output",
    "objective-c-cpp-output": "objective-c-cpp-output",
    "objective-c++": "objective-c++-cpp-output",
    "objective-c++-cpp-output": "objective-c++-cpp-output",
}
"""A ``-x`` language -> the preprocessed language that is really compiled."""

_WORD_PATTERNS = {
    "int": re.compile(r"[+-]?[0-9]+"),
    "word": re.compile(r"[A-Za-z0-9_.+-]+"),
    "list": re.compile(r"[A-Za-z0-9_.+=-]+(?:[,:][A-Za-z0-9_.+=-]*)*"),
    "cpu": re.compile(r"[A-Za-z0-9_.+-]+"),
    "warning": re.compile(r"[A-Za-z0-9_.+=-]*"),
    "target": re.compile(r"[A-Za-z0-9_.,:+=-]*"),
}
_DESCRIBE = {
    "int": "a number",
    "word": "a word (letters, digits, _ . + -)",
    "list": "words separated by , or :",
    "cpu": "a CPU name",
    "warning": "a warning's name",
    "target": "a target option's value",
}
_DASH_VALUES = frozenset({"-Xlinker"})
"""Separate values that may start with '-' (the linker's options: no link runs)."""


def argument_refusal(arg: str) -> str | None:
    """Why an argument of the command line is refused, or None."""
    if "\0" in arg:
        return "an argument holds a NUL byte"
    if arg.startswith("@"):
        # gcc and clang expand a response file wherever an argument starts
        # with @, option values included, and echo its lines in their errors.
        return f"{arg!r} is refused: @FILE reads arguments from the server"
    return None


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
    if (
        value.startswith("-")
        and kind not in NESTED_KINDS
        and spec.spelling not in _DASH_VALUES
        and (separate or spec.form is Form.EITHER)
    ):
        # A value that looks like an option: if the scanner and the compiler ever
        # disagree on where an option ends, this is where an option would hide.
        return f"{shown!r}{where}: a value that starts with '-' is refused"
    if kind in NESTED_KINDS or kind in ("string", "output"):
        return None  # (nested: each piece is then judged as that program's argument)
    if kind == "language":
        if value not in PREPROCESSED_LANGUAGE and value != "none":
            return f"{shown!r}: only C, C++ and Objective-C are compiled here"
        return None
    if kind == "specs":
        reason = specs_check(value) if specs_check is not None else "no specs file is trusted"
        return None if reason is None else f"{shown!r} is refused: {reason}"
    if kind.startswith("choice:"):
        choices = kind[len("choice:") :]
        if value not in choices.split("|"):
            return f"{shown!r}{where}: {value!r} is not one of {choices}"
        return None
    pattern = _WORD_PATTERNS.get(kind)
    if pattern is None:
        return f"{shown!r}: the option table has no rule for {kind!r} values"
    if not pattern.fullmatch(value) or ".." in value:  # ".." would name a parent dir
        return (
            f"{shown!r}{where} is refused: its value must be {_DESCRIBE[kind]}"
            " (a path or a program is never one)"
        )
    if kind == "cpu" and value.lower() == "native":
        return f"{shown!r} would mean the server's CPU, not yours"
    return None
