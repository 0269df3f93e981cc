"""Whole command lines judged once per shape: a build sends the same options for every
file, with only the source and output names changed (``gcc -O2 -c a.c -o a.o``, then
``b.c``/``b.o``). The judge (daemon/judge.py) remembers the verdict of a command line it
accepted under its *shape*: every argument as it is, but for the two names, which stand
there as the facts about them that the judge's rules read. Another command line of that
shape then needs only its two names judged.

The two names are found without the option table: the argument after a lone ``-o``
and the one other argument that does not start with ``-``. A shape is remembered only
when the full judge found exactly those two: the input at the first and the output
option's separate value at the second (a command line with a third such argument, a
separate value like ``-MF deps.d``, is judged anew every time). Nothing that reads the
disk (``-specs=``) is remembered, only accepted verdicts are, and the memory is bounded
in entries, arguments and characters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from daemon.canonical import Job
from wire.args import Option, is_source_name

MAX_VERDICTS = 1024
"""Shapes remembered (the memory is dropped whole when full)."""
MAX_SHAPE_CHARS = 4096
MAX_SHAPE_ARGS = 256
"""Longer command lines are judged anew every time: the memory's bound (review 27: with
no bound on arguments, 1,024 lines of 2,045 ``-c`` held 140 MB)."""
ARG_BYTES = 64
"""What one remembered argument costs beyond its characters (its string object and its
slot in two tuples): counted in :meth:`Verdicts.chars`."""
_NAME = "\0name"
"""Stands for a name in a shape (no argument holds a NUL: the judge refuses those)."""


def name_facts(name: str) -> tuple[object, ...]:
    """What the judge's rules read of a source or output name, beyond the checks run on
    every name anew: whether it starts with ``-`` or ``-o`` (how option scanning and a
    real distccd read it), its suffix after the last ``.`` (a source suffix, ``.o``: the
    language, and what distccd takes for the input or output), and whether it names a
    source file; and whether it is empty. Two names with the same facts are read alike
    by every rule."""
    return (
        _NAME,
        name == "",
        name[:1] == "-",
        name.startswith("-o"),
        name.rpartition(".")[2] if "." in name else None,
        is_source_name(name),
    )


@dataclass(frozen=True, slots=True)
class Shape:
    """A command line's shape (:func:`shape_of`) and where its two names are."""

    key: tuple[object, ...]
    input_at: int
    output_at: int


def shape_of(argv: Sequence[str]) -> Shape | None:
    """``argv``'s shape, when it has exactly two names (the argument after a lone ``-o``,
    and one other that does not start with ``-``), is short, and reads nothing from the
    disk; else None (judged anew)."""
    if not 4 <= len(argv) <= MAX_SHAPE_ARGS or sum(map(len, argv)) > MAX_SHAPE_CHARS:
        return None
    input_at = output_at = -1
    for i in range(1, len(argv)):
        arg = argv[i]
        if argv[i - 1] == "-o":
            if output_at >= 0:
                return None
            output_at = i
        elif arg[:1] != "-":
            if input_at >= 0:
                return None
            input_at = i
        elif "specs" in arg:
            return None  # (a specs file is judged by what is on the disk now)
    if input_at < 0 or output_at < 0:
        return None
    key: list[object] = list(argv)
    key[input_at] = name_facts(argv[input_at])
    key[output_at] = name_facts(argv[output_at])
    return Shape(tuple(key), input_at, output_at)


@dataclass(frozen=True, slots=True)
class Verdict:
    """An accepted command line's job, and its ``-o`` option as scanned."""

    job: Job
    output: Option

    def output_named(self, name: str) -> Option:
        """Its ``-o`` option with another value (judged as the full judge judges it)."""
        o = self.output
        return Option(o.index, o.text, o.spec, name, o.value_index)

    def job_for(self, input_name: str) -> Job:
        """The job for another source name (the output's name is not in a canonical
        command line: every job writes the same one)."""
        argv = list(self.job.argv)
        argv[self.job.input_index] = input_name
        return replace(self.job, argv=tuple(argv))


class Verdicts:
    """Accepted verdicts by shape, bounded (:data:`MAX_VERDICTS`)."""

    def __init__(self) -> None:
        self._by_shape: dict[tuple[object, ...], Verdict] = {}
        self._chars = 0

    def get(self, shape: Shape) -> Verdict | None:
        return self._by_shape.get(shape.key)

    def remember(self, shape: Shape, verdict: Verdict, argv: Sequence[str]) -> None:
        if len(self._by_shape) >= MAX_VERDICTS:
            self._by_shape.clear()
            self._chars = 0
        if shape.key not in self._by_shape:
            self._chars += sum(map(len, argv)) + ARG_BYTES * len(argv)
        self._by_shape[shape.key] = verdict

    def chars(self) -> int:
        """About the bytes remembered (the shapes' arguments and what holds them)."""
        return self._chars
