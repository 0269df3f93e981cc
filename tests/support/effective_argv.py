"""What the programs of a compile receive from the driver's command line: a model of
how gcc and clang hand arguments on, for a preprocessed source compiled with -c.

Found with ``gcc -###`` and ``clang -###`` (gcc 12, clang 14) and checked against them
by tests/integration/test_judge_carriers.py::test_the_model_is_what_the_drivers_run:

- the assembler (GNU as) gets, in this order: clang (with ``-fno-integrated-as``)
  ``--debug-prefix-map MAP`` for every ``-fdebug-prefix-map=`` and ``-ffile-prefix-map=``
  whose MAP is OLD=NEW;
  both drivers ``-I DIR`` for every ``-I`` (joined or not: a separate argument either
  way); then every piece of ``-Wa,`` (split at commas) and every ``-Xassembler`` value,
  in command-line order, as one list: an option in one carrier takes its value from
  the next carrier. After them come ``-o OBJECT INPUT.s``.
- clang's front end (``clang -cc1``) gets every ``-Xclang`` value, in order, and right
  after them ``-mllvm VALUE`` for every ``-mllvm`` (and, from clang 16, every
  ``-mllvm=VALUE``); it expands @FILE over all of it.
- LLVM's option parser gets the value after every ``-mllvm`` of the front end's list.
- the preprocessor would get the pieces of ``-Wp,`` and the ``-Xpreprocessor`` values;
  neither driver runs it on a preprocessed source, so this is what it *would* get.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from wire.args import default_table


@dataclass
class Effective:
    """The arguments each program gets from the command line (not the driver's own)."""

    assembler_forwarded: list[str] = field(default_factory=list)
    """What the driver makes of its own options for the assembler (-I, prefix maps)."""
    assembler_carried: list[str] = field(default_factory=list)
    """The pieces of -Wa, and the -Xassembler values."""
    front_end: list[str] = field(default_factory=list)
    preprocessor: list[str] = field(default_factory=list)

    @property
    def assembler(self) -> list[str]:
        return self.assembler_forwarded + self.assembler_carried

    @property
    def llvm(self) -> list[str]:
        args = self.front_end
        return [args[i + 1] for i in range(len(args) - 1) if args[i] == "-mllvm"]

    def programs(self) -> dict[str, list[str]]:
        return {
            "assembler": self.assembler,
            "front end": self.front_end,
            "LLVM": self.llvm,
            "preprocessor": self.preprocessor,
        }


_PREFIX_MAPS = ("-fdebug-prefix-map=", "-ffile-prefix-map=")


def _takes_next(arg: str) -> bool:
    """A driver option that takes the next argument as its value (the table's word for
    it, which tests/integration/test_option_table.py checks against the compilers)."""
    found = default_table().lookup("driver", arg)
    return found is not None and found[1] is None and found[0].may_take_next


def effective(argv: Sequence[str], *, clang: bool) -> Effective:
    """What the assembler, clang's front end, LLVM and the preprocessor get from the
    command line ``argv`` (the compiler first), as gcc (``clang=False``) or clang with
    ``-fno-integrated-as`` hand it on."""
    prefix_maps: list[str] = []
    includes: list[str] = []
    pieces: list[str] = []
    xclang: list[str] = []
    mllvm: list[str] = []
    preprocessor: list[str] = []
    i = 1
    while i < len(argv):
        arg = argv[i]
        following = argv[i + 1] if i + 1 < len(argv) else ""
        if arg.startswith("-Wa,"):
            pieces += arg[4:].split(",")
        elif arg.startswith("-Wp,"):
            preprocessor += arg[4:].split(",")
        elif arg.startswith(_PREFIX_MAPS):
            value = arg.split("=", 1)[1]
            if "=" in value:  # (clang drops a map that is not OLD=NEW)
                prefix_maps.append(value)
        elif arg.startswith("-mllvm="):  # clang 16 and later read it as -mllvm VALUE
            mllvm.append(arg[len("-mllvm=") :])
        elif arg.startswith("-I") and arg != "-I":
            includes.append(arg[2:])
        elif _takes_next(arg):
            into = {
                "-Xassembler": pieces, "-Xpreprocessor": preprocessor, "-Xclang": xclang,
                "-mllvm": mllvm, "-I": includes,
            }.get(arg)  # fmt: skip
            if into is not None:
                into.append(following)
            i += 1
        i += 1
    forwarded = [a for value in includes for a in ("-I", value)]
    if not clang:
        return Effective(forwarded, pieces, [], preprocessor)
    maps = [a for value in prefix_maps for a in ("--debug-prefix-map", value)]
    front_end = xclang + [a for value in mllvm for a in ("-mllvm", value)]
    return Effective(maps + forwarded, pieces, front_end, preprocessor)
