"""The canonical command line: what a judged job becomes, for every server alike (pure).

What a balancer sends a backend, and what a distlb-server runs, is not the client's
command line but one built from what the judge accepted:

    COMPILER -o distlb.o [-x LANGUAGE] INPUT OPTION...

- the compiler by its bare name;
- ``-o`` and a fixed name, right after it (``distlb.s`` under ``-S``): every server puts
  a file of its own there, so the client's name never reaches a compiler;
- the input right after that, behind ``-x`` rewritten to the preprocessed language when
  the client gave one (gcc would preprocess the sent source again under ``-x c``, and
  open the files its ``#include`` lines name);
- then the client's options in its order, but for ``-o``, ``-x`` and the linker's
  (``-Wl,``, ``-Xlinker``, ``-l``, ``-L``, ``-z``, ``-u``: under ``-c`` or ``-S`` no link
  runs, and neither gcc nor clang hands them to any program, as ``-###`` shows).

Why that order: a real distccd does not parse options (daemon/distccd_argv.py). It
takes the first argument that looks like a source for the input and the argument after
the first ``-o`` for the output, and replaces both with its own files. Nothing comes
before them here but the compiler's name, so nothing a client writes can be taken for
either; and with the linker's options gone, no value that starts with ``-`` is left but
those carried to another program, which the judge reads as that program's options.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from daemon.distccd_argv import disagreement
from daemon.languages import PREPROCESSED_LANGUAGE, PREPROCESSED_SUFFIX, SUFFIX_OF_LANGUAGE
from daemon.logged import quoted
from wire.args import Scan, is_source_name

OUTPUT_NAMES = {".o": "distlb.o", ".s": "distlb.s"}
"""The output's name in a canonical command line, by the job's output suffix."""
LEFT_OUT_KINDS = frozenset({"output", "language", "linker"})
"""Options the canonical command line does not carry on: ``-o`` and ``-x`` are written
anew in front, the linker's reach no program under ``-c`` or ``-S``."""


class NotCanonical(Exception):
    """The job cannot be put in canonical form; ``reason`` says why (the judge refuses)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Job:
    """An accepted compile job."""

    compiler: str
    """The compiler's bare name."""
    argv: tuple[str, ...]
    """The canonical command line: what a backend is sent and a server runs."""
    input_index: int
    output_index: int
    """Where the value of ``-o`` is in ``argv``."""
    source_suffix: str
    """The preprocessed source's suffix: ``.i``, ``.ii``, ``.mi`` or ``.mii``."""
    output_suffix: str
    """``.o``, or ``.s`` for ``-S``."""

    @property
    def input_name(self) -> str:
        return self.argv[self.input_index]

    @property
    def output_name(self) -> str:
        return self.argv[self.output_index]

    def command(self, compiler_path: str, input_path: str, output_path: str) -> list[str]:
        """The command that compiles this job's files: the input and output replaced."""
        command = list(self.argv)
        command[0] = compiler_path
        command[self.input_index] = input_path
        command[self.output_index] = output_path
        return command


def canonical_job(compiler: str, argv: Sequence[str], scanned: Scan, output_suffix: str) -> Job:
    """The job of ``argv`` (judged already, option by option; ``scanned`` is its scan) in
    canonical form. Raises :class:`NotCanonical` when it is not one compile of one
    source, or when a real distccd would still read it otherwise."""
    if len(scanned.positionals) != 1:
        found = [quoted(argv[i]) for i in scanned.positionals[:8]]
        raise NotCanonical(f"a job compiles exactly one source file, got [{', '.join(found)}]")
    input_at = scanned.positionals[0]
    input_name = argv[input_at]
    if input_name == "-":
        raise NotCanonical("'-' (the source on standard input) is not a job distcc sends")
    if not is_source_name(input_name):
        raise NotCanonical(f"{quoted(input_name)} is not a C, C++ or Objective-C source file")
    language: str | None = None
    outputs = 0
    rest: list[str] = []
    for option in scanned.options:
        kind = option.spec.kind if option.spec is not None else None
        if kind not in LEFT_OUT_KINDS:
            rest += argv[option.index : option.end]
        elif kind == "output":
            outputs += 1
            if not option.value:
                raise NotCanonical("-o names no file")
        elif kind == "language" and option.index < input_at:
            value = option.value or "none"
            if value != "none" and value not in PREPROCESSED_LANGUAGE:
                # (an operator's --allow-option=-x* lets any value through the judge)
                raise NotCanonical(f"-x {quoted(value)}: not a C, C++ or Objective-C language")
            language = None if value == "none" else PREPROCESSED_LANGUAGE[value]
    if outputs > 1:
        raise NotCanonical("more than one -o")
    head = [compiler, "-o", OUTPUT_NAMES[output_suffix]]
    if language is not None:
        head += ["-x", language]
    canonical = (*head, input_name, *rest)
    reason = disagreement(canonical, len(head), 2)
    if reason is not None:
        raise NotCanonical(reason)
    extension = input_name.rsplit(".", 1)[-1]
    source_suffix = SUFFIX_OF_LANGUAGE[language] if language else PREPROCESSED_SUFFIX[extension]
    return Job(compiler, canonical, len(head), 2, source_suffix, output_suffix)
