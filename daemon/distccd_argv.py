"""How a real distccd (Debian's 3.4) reads the command line it is sent: a model (pure).

A balancer forwards the judge's canonical command line to real distccd servers too,
and distccd does not read options as a compiler does. Three of its functions decide
which argument it compiles and which it writes (src/arg.c, read for this model):

- ``dcc_scan_args`` walks argv once, looking at each argument alone. An argument that
  is exactly ``-o`` makes the next one the output, whatever it is; one that starts
  with ``-o`` is the output joined; ``-MF``, ``-MT`` and ``-MQ`` (exactly) skip the
  next argument. Any other argument that does not start with ``-`` is the input when
  the text after its last ``.`` is a source suffix, and an output when it ends in
  ``.o``; the values of every other option are read so too. A second input or a second
  output makes it give up (the job fails, the client compiles locally).
- ``dcc_set_input`` puts distccd's temporary source in place of the *first* argument
  whose text after its last ``.`` is a source suffix, wherever it stands: an option
  (``-DNAME=x.c``), an option's value, the compiler's name.
- ``dcc_set_output`` puts its temporary object in place of the argument after the
  *first* argument that is exactly ``-o``, or of the text after ``-o`` in the first
  that starts with it.

Where these disagree with the judge about the input or the output, distccd compiles a
command line the judge never saw: a review made ``-Xlinker -o -Xlinker X`` free X (a
``-fcompare-debug=`` that ran a command), and ``-o x.c /some/file.c`` compile a file
of distccd's own machine. :func:`disagreement` says where a command line means
something else to distccd than the judge found; the judge builds its canonical command
line so that there is no such place, and refuses one that still has it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from daemon.logged import quoted
from wire.args import SOURCE_EXTENSIONS

SKIPS_NEXT = frozenset({"-MF", "-MT", "-MQ"})
"""Options after which ``dcc_scan_args`` does not look at the next argument (``-o`` aside)."""


@dataclass(frozen=True, slots=True)
class DistccdReading:
    """Which arguments distccd takes for what, by index into the command line."""

    inputs: tuple[int, ...]
    """Taken for the source file by ``dcc_scan_args`` (more than one: it gives up)."""
    outputs: tuple[int, ...]
    """Taken for the output: a value after ``-o``, an argument ``-oNAME`` (its own
    index), an argument ending in ``.o`` (more than one: it gives up)."""
    replaced_input: int | None
    """The argument ``dcc_set_input`` replaces with its temporary source."""
    replaced_output: int | None
    """The argument ``dcc_set_output`` replaces (the value after ``-o``, or an argument
    ``-oNAME`` whose NAME it replaces)."""


def is_distccd_source(arg: str) -> bool:
    """distccd's ``dcc_is_source``: the text after the argument's last ``.`` (in the whole
    argument, directories and options alike) is a C, C++ or Objective-C source suffix."""
    dot = arg.rfind(".")
    return dot >= 0 and arg[dot + 1 :] in SOURCE_EXTENSIONS


def reading(argv: Sequence[str]) -> DistccdReading:
    """What distccd 3.4 takes for the input and the output of ``argv`` (the compiler's
    name first, as it is sent), and which arguments it replaces. (One pass: the judge
    asks this of every job.)"""
    inputs: list[int] = []
    outputs: list[int] = []
    replaced_input: int | None = None
    replaced_output: int | None = None
    last = len(argv) - 1
    passed_over = False  # dcc_scan_args does not look at this argument
    for i, arg in enumerate(argv):
        dash = arg[:1] == "-"
        if replaced_input is None and is_distccd_source(arg):
            replaced_input = i
        if replaced_output is None and dash and arg.startswith("-o"):
            replaced_output = i + 1 if arg == "-o" and i < last else i
        if passed_over:
            passed_over = False
        elif dash:
            if arg in SKIPS_NEXT:
                passed_over = True
            elif arg == "-o":
                outputs += [i + 1] if i < last else []
                passed_over = True
            elif arg.startswith("-o"):
                outputs.append(i)
        elif is_distccd_source(arg):
            inputs.append(i)
        elif arg.endswith(".o"):
            outputs.append(i)
    return DistccdReading(tuple(inputs), tuple(outputs), replaced_input, replaced_output)


def disagreement(argv: Sequence[str], input_index: int, output_index: int) -> str | None:
    """Why distccd would read ``argv`` otherwise than as compiling ``argv[input_index]``
    into the value of the ``-o`` at ``output_index - 1``, naming the argument; or None
    when it reads it so (takes and replaces exactly those two)."""
    read = reading(argv)
    if argv[output_index - 1] != "-o":
        return "the canonical command line has no separate -o (a bug: please report it)"
    for index in (*read.inputs, read.replaced_input):
        if index is not None and index != input_index:
            return (
                f"{quoted(argv[index])} is refused: a real distccd would take it for the "
                "source file (it takes any argument whose text after its last '.' is a "
                "source suffix), and compile something else than what was judged"
            )
    for index in (*read.outputs, read.replaced_output):
        if index is not None and index != output_index:
            return (
                f"{quoted(argv[index])} is refused: a real distccd would take it for the "
                "output file (an argument that starts with -o, or that ends in .o), and "
                "compile something else than what was judged"
            )
    if read.inputs != (input_index,) or read.replaced_input != input_index:
        return f"a real distccd would not find the source file {quoted(argv[input_index])}"
    if read.outputs != (output_index,) or read.replaced_output != output_index:
        return "a real distccd would not find the output file"
    return None
