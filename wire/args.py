"""One scanner for compile command lines (pure): which argument is the input,
which options take a value, where ``-o`` is.

What the scanner knows of gcc's and clang's options comes from one table,
``wire/compiler_options.txt``: each option's spelling, its form (a flag, a
value joined to it, a value in the next argument) and the kind of value it
takes. The judge (``daemon/judge.py``) decides from those kinds what may run;
the result cache (``cache/keys.py``) uses the same scan to find the input and
output names it leaves out of a key, so a key and a compile never disagree on them.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources

CONTEXTS = ("driver", "as", "cc1", "llvm", "cpp")
"""Where an option is read: the compiler driver, the assembler (``-Wa,``), clang's
front end (``-Xclang``), LLVM (``-mllvm``) and the preprocessor (``-Wp,``)."""

SOURCE_EXTENSIONS = frozenset(
    {"c", "i", "cc", "cpp", "cxx", "cp", "c++", "C", "ii", "m", "mi", "mm", "M", "mii"}
)
"""What distcc's client calls a source file (``dcc_is_source``)."""

_NEGATABLE = "[no-]"
LOOKUPS_REMEMBERED = 16384
"""Arguments whose lookup is remembered; the memory is dropped whole when full."""
REMEMBERED_CHARS = 128
"""Only arguments this short are remembered, so the memory is bounded in bytes too:
scan() looks up every argument of every request, refused ones included, and a request
may carry thousands of arguments of 64 KiB (a review held 2 GB of them in a balancer).
Builds repeat short arguments; a long one is looked up again, which costs microseconds."""
_CONTEXT_PREFIX = re.compile(r"^(as|cc1|llvm|cpp):")


class Form(enum.Enum):
    FLAG = "flag"
    JOINED = "joined"
    SEPARATE = "separate"
    EITHER = "either"
    FAMILY = "family"


@dataclass(frozen=True, slots=True)
class OptionSpec:
    """One line of the option table, with ``[no-]`` expanded."""

    context: str
    spelling: str
    form: Form
    kind: str
    reason: str = ""
    line: int = 0

    @property
    def may_take_next(self) -> bool:
        """Whether, written without a joined value, it takes the next argument."""
        return self.form is Form.SEPARATE or self.form is Form.EITHER


@dataclass(slots=True)
class Option:
    """One option as it stands in a command line (not frozen: built per argument of
    every job, and a frozen dataclass is several times slower to build)."""

    index: int
    """Where the option's own argument is."""
    text: str
    spec: OptionSpec | None
    """None: the table does not know it."""
    value: str | None = None
    value_index: int | None = None
    """Where a separate value is (None when joined, or when there is none)."""

    @property
    def end(self) -> int:
        """The index after the option and its value."""
        return (self.value_index if self.value_index is not None else self.index) + 1


@dataclass(frozen=True, slots=True)
class Scan:
    """A command line taken apart: its options and the arguments that are not options."""

    args: tuple[str, ...]
    options: tuple[Option, ...]
    positionals: tuple[int, ...]
    """Indexes of arguments that are neither options nor option values: inputs."""
    missing_value: Option | None = None
    """An option at the end that needed the next argument as its value."""

    def outputs(self) -> list[Option]:
        return [o for o in self.options if o.spec is not None and o.spec.kind == "output"]


class OptionTable:
    """The option table, indexed for lookups by exact spelling, joined prefix and family."""

    def __init__(self, specs: Iterable[OptionSpec]) -> None:
        self.specs = tuple(specs)
        self._exact: dict[tuple[str, str], OptionSpec] = {}
        self._joined: dict[tuple[str, str], OptionSpec] = {}
        self._family: dict[tuple[str, str], OptionSpec] = {}
        self._longest: dict[str, int] = dict.fromkeys(CONTEXTS, 0)
        self._seen: dict[tuple[str, str], tuple[OptionSpec, str | None] | None] = {}
        for spec in self.specs:
            key = (spec.context, spec.spelling)
            targets = {
                Form.FLAG: [self._exact],
                Form.SEPARATE: [self._exact],
                Form.EITHER: [self._exact, self._joined],
                Form.JOINED: [self._joined],
                Form.FAMILY: [self._family],
            }[spec.form]
            for target in targets:
                if key in target:
                    other = target[key]
                    raise ValueError(f"line {spec.line}: {spec.spelling} repeats line {other.line}")
                target[key] = spec
            if spec.form in (Form.JOINED, Form.EITHER, Form.FAMILY):
                self._longest[spec.context] = max(self._longest[spec.context], len(spec.spelling))

    @classmethod
    def parse(cls, text: str) -> OptionTable:
        """Read the table's text format (see the head of compiler_options.txt).
        Raises ``ValueError`` naming the line of a malformed entry."""
        specs: list[OptionSpec] = []
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            fields = line.split(None, 3)
            if len(fields) < 3:
                raise ValueError(f"line {number}: expected SPELLING FORM VALUE: {raw!r}")
            spelling, form_name, kind = fields[:3]
            reason = fields[3] if len(fields) > 3 else ""
            context = "driver"
            match = _CONTEXT_PREFIX.match(spelling)
            if match:
                context, spelling = match.group(1), spelling[match.end() :]
            try:
                form = Form(form_name)
            except ValueError:
                raise ValueError(f"line {number}: unknown form {form_name!r}") from None
            if (kind == "refuse") != bool(reason):
                raise ValueError(f"line {number}: a reason goes with refuse, and only with it")
            if form is Form.FLAG and kind not in ("-", "refuse"):
                raise ValueError(f"line {number}: a flag takes no value")
            if form is not Form.FLAG and kind == "-":
                raise ValueError(f"line {number}: {form_name} needs a value kind")
            if not spelling.startswith("-"):
                raise ValueError(f"line {number}: {spelling!r} is not an option")
            spellings = [spelling]
            if _NEGATABLE in spelling:
                head, tail = spelling.split(_NEGATABLE, 1)
                spellings = [head + tail, head + "no-" + tail]
            specs += [OptionSpec(context, s, form, kind, reason, number) for s in spellings]
        return cls(specs)

    def lookup(self, context: str, arg: str) -> tuple[OptionSpec, str | None] | None:
        """The table's entry for ``arg`` and its joined value (None: no joined value;
        a SEPARATE or EITHER entry then wants the next argument). None when unknown.
        Builds repeat the same few hundred arguments: answers for short ones are
        remembered (bounded in number and in bytes)."""
        key = (context, arg)
        try:
            return self._seen[key]
        except KeyError:
            pass
        found = self._lookup(context, arg)
        if len(arg) <= REMEMBERED_CHARS:
            if len(self._seen) >= LOOKUPS_REMEMBERED:
                self._seen.clear()
            self._seen[key] = found
        return found

    def remembered_chars(self) -> int:
        """The characters of argument text the lookup memory holds (at most
        :data:`LOOKUPS_REMEMBERED` times :data:`REMEMBERED_CHARS`)."""
        return sum(len(arg) for _, arg in self._seen)

    def _lookup(self, context: str, arg: str) -> tuple[OptionSpec, str | None] | None:
        if context == "llvm" and arg.startswith("--"):
            arg = arg[1:]  # LLVM reads -name and --name alike
        spec = self._exact.get((context, arg))
        if spec is not None:
            return spec, None
        for length in range(min(len(arg) - 1, self._longest[context]), 1, -1):
            spec = self._joined.get((context, arg[:length]))
            if spec is not None:
                return spec, arg[length:]
        for length in range(min(len(arg), self._longest[context]), 1, -1):
            spec = self._family.get((context, arg[:length]))
            if spec is not None:
                return spec, arg[length:]
        return None


@functools.cache
def default_table() -> OptionTable:
    """The table shipped with distlb (parsed once)."""
    text = resources.files("wire").joinpath("compiler_options.txt").read_text("utf-8")
    return OptionTable.parse(text)


def scan(
    args: Sequence[str],
    *,
    context: str = "driver",
    start: int = 0,
    table: OptionTable | None = None,
) -> Scan:
    """Take ``args[start:]`` apart into options (with their values) and positional
    arguments. Never raises: what it cannot place is an unknown option or a positional,
    and the judge decides about those."""
    table = table or default_table()
    options: list[Option] = []
    positionals: list[int] = []
    missing: Option | None = None
    i = start
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-") or arg == "-":
            positionals.append(i)
            i += 1
            continue
        found = table.lookup(context, arg)
        if found is None:
            options.append(Option(i, arg, None))
            i += 1
            continue
        spec, joined = found
        if joined is not None or not spec.may_take_next:
            options.append(Option(i, arg, spec, joined))
            i += 1
        elif i + 1 < len(args):
            options.append(Option(i, arg, spec, args[i + 1], i + 1))
            i += 2
        else:
            missing = Option(i, arg, spec)
            options.append(missing)
            i += 1
    return Scan(tuple(args), tuple(options), tuple(positionals), missing)


def is_source_name(name: str) -> bool:
    """True for a file name with a C, C++ or Objective-C source extension."""
    base = name.rsplit("/", 1)[-1]
    return "." in base and base.rsplit(".", 1)[-1] in SOURCE_EXTENSIONS
