"""Make distcc 3.4's include-server C extension work on Python >= 3.10 (distcc issue #454).

    python3 scripts/pump_ssize_fix.py SOURCE_TREE

Run by scripts/build-pump-client.sh on a freshly unpacked distcc source tree, before it
is built. Since Python 3.10 a ``#`` format unit (``s#``: a buffer and its length) raises
``SystemError`` unless the module defines ``PY_SSIZE_T_CLEAN`` before including Python.h,
and then the length it writes is a ``Py_ssize_t``, not an ``int``. So this defines the
macro and retypes each length variable that a ``PyArg_ParseTuple`` call fills through a
``#`` unit. It changes nothing else, and it exits 1, saying why, when the file is not
the one it was written for (the macro already there, no ``#`` unit left, a length not
declared as a plain ``int`` in its own function, a ``#`` format in a call it does not
handle): a recipe that silently did nothing would build the broken extension again.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

EXTENSION = Path("include_server/c_extensions/distcc_pump_c_extensions_module.c")
INCLUDE_PYTHON = re.compile(r'^#include\s*[<"]Python\.h[>"][^\n]*\n', re.MULTILINE)
PARSE_TUPLE = re.compile(r"\bPyArg_ParseTuple\s*\(")
# The rest of such a call: the args tuple, the format literal, the other arguments.
PARSE_TUPLE_REST = re.compile(r'\s*\w+\s*,\s*"([^"]*)"\s*,([^()]*)\)')
# Other calls that read a format string: a "#" in one of theirs is not handled here.
OTHER_FORMAT_CALLS = re.compile(
    r"\b(Py_BuildValue|PyArg_ParseTupleAndKeywords|PyArg_Parse|PyArg_VaParse"
    r'|PyObject_CallFunction|PyObject_CallMethod)\s*\([^;]*"[^"]*#'
)
# How many C arguments each format unit takes (the "#" variants add the length).
UNIT_ARGS = {**dict.fromkeys("bBhHiIlkLKncCfdDpOSUYszyuZ", 1), "w*": 1, "s*": 1, "y*": 1,
             "z*": 1, "O!": 2, "O&": 2, "es": 2, "et": 2}  # fmt: skip
HASH_UNITS = {"s#", "y#", "z#", "u#", "Z#", "es#", "et#"}


class NotTheExpectedSource(Exception):
    """The file does not look like distcc 3.4's extension module."""


def length_arguments(fmt: str, arguments: list[str]) -> list[str]:
    """The C arguments (``&name``) that receive a ``#`` unit's length in one call."""
    lengths: list[str] = []
    position = 0
    index = 0
    while index < len(fmt):
        char = fmt[index]
        if char in ":;":  # the function's name or an error message follows
            break
        if char in "()|$":
            index += 1
            continue
        unit = fmt[index : index + 2] if char == "e" else char
        if index + len(unit) < len(fmt) and fmt[index + len(unit)] in "#*!&":
            unit += fmt[index + len(unit)]
        if unit in HASH_UNITS:
            count = 3 if unit.startswith("e") else 2
        elif unit in UNIT_ARGS:
            count = UNIT_ARGS[unit]
        else:
            raise NotTheExpectedSource(f"format unit {unit!r} in {fmt!r} is not known here")
        if position + count > len(arguments):
            raise NotTheExpectedSource(f"format {fmt!r} has more units than arguments")
        if unit in HASH_UNITS:
            lengths.append(arguments[position + count - 1])
        position += count
        index += len(unit)
    if position != len(arguments):
        raise NotTheExpectedSource(f"format {fmt!r} does not match its arguments {arguments}")
    return lengths


def retype_length(text: str, name: str, call_at: int) -> str:
    """``int name;`` becomes ``Py_ssize_t name;`` in the function that holds ``call_at``."""
    declarations = list(re.finditer(rf"^(\s*)int(\s+{name}\s*;)", text[:call_at], re.MULTILINE))
    if not declarations:
        raise NotTheExpectedSource(f"no 'int {name};' before the call at offset {call_at}")
    found = declarations[-1]
    # A "}" in column 0 closes a function: the declaration must be in the call's own.
    if re.search(r"^\}", text[found.end() : call_at], re.MULTILINE):
        raise NotTheExpectedSource(f"'int {name};' is not declared in the function that uses it")
    return f"{text[: found.start()]}{found[1]}Py_ssize_t{found[2]}{text[found.end() :]}"


def fix(text: str) -> tuple[str, list[str]]:
    """The fixed module text, and what was changed (for the build log)."""
    if "PY_SSIZE_T_CLEAN" in text:
        raise NotTheExpectedSource("PY_SSIZE_T_CLEAN is already there: is this fix still needed?")
    includes = INCLUDE_PYTHON.findall(text)
    if len(includes) != 1:
        raise NotTheExpectedSource(f"expected one '#include \"Python.h\"', found {len(includes)}")
    other = OTHER_FORMAT_CALLS.search(text)
    if other:
        raise NotTheExpectedSource(f"a '#' format in a {other[1]} call is not handled here")
    # Retype from the last call backwards, so earlier offsets stay valid.
    retyped: list[str] = []
    for start in reversed(list(PARSE_TUPLE.finditer(text))):
        call = PARSE_TUPLE_REST.match(text, start.end())
        line = text.count("\n", 0, start.start()) + 1
        if not call:
            raise NotTheExpectedSource(f"the PyArg_ParseTuple call on line {line} is not simple")
        arguments = [arg.strip() for arg in call[2].split(",")]
        for argument in length_arguments(call[1], arguments):
            if not re.fullmatch(r"&\w+", argument):
                raise NotTheExpectedSource(f"length argument {argument!r} is not '&name'")
            text = retype_length(text, argument[1:], start.start())
            retyped.append(f"int {argument[1:]} -> Py_ssize_t (for {call[1]!r}, line {line})")
    if not retyped:
        raise NotTheExpectedSource("no PyArg_ParseTuple call with a '#' format unit")
    text = INCLUDE_PYTHON.sub(lambda include: "#define PY_SSIZE_T_CLEAN\n" + include[0], text)
    return text, [*reversed(retyped), "#define PY_SSIZE_T_CLEAN before Python.h"]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    module = Path(argv[1]) / EXTENSION
    try:
        fixed, changes = fix(module.read_text())
    except (OSError, NotTheExpectedSource) as error:
        print(f"pump_ssize_fix: {module}: {error}", file=sys.stderr)
        return 1
    module.write_text(fixed)
    for change in changes:
        print(f"pump_ssize_fix: {module}: {change}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
