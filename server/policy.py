"""Argument policy: which compile jobs may run, judged from argv alone (pure).

A job is a compile of exactly one preprocessed source file by an
allowlisted compiler, named by its bare name. Any argument that would run
another program, load code into the compiler, or read or write a file
outside the job's temp dir is refused. The reasoning for each rule is in
docs/policy.md.
"""

from __future__ import annotations

import os.path
from collections.abc import Mapping
from dataclasses import dataclass

# Never a compiler, whatever the allowlist says: each can run arbitrary code.
FORBIDDEN_COMPILER_NAMES = frozenset(
    {
        "sh",
        "bash",
        "dash",
        "zsh",
        "ksh",
        "csh",
        "tcsh",
        "env",
        "busybox",
        "python",
        "python3",
        "perl",
        "ruby",
        "node",
        "xargs",
        "nice",
        "timeout",
        "sudo",
        "su",
    }
)

# Extension of the input as the client names it -> suffix of the preprocessed file.
PREPROCESSED_SUFFIX = {
    "c": ".i", "i": ".i",
    "cc": ".ii", "cpp": ".ii", "cxx": ".ii", "cp": ".ii", "c++": ".ii", "C": ".ii", "ii": ".ii",
    "m": ".mi", "mi": ".mi",
    "mm": ".mii", "M": ".mii", "mii": ".mii",
}  # fmt: skip

# Options whose value is the next argument (so that argument is not the input file).
_TAKES_VALUE = frozenset(
    {
        "-o",
        "-x",
        "-MF",
        "-MT",
        "-MQ",
        "-Xassembler",
        "-Xlinker",
        "-Xpreprocessor",
        "-Xclang",
        "-mllvm",
        "-I",
        "-isystem",
        "-iquote",
        "-idirafter",
        "-iprefix",
        "-iwithprefix",
        "-iwithprefixbefore",
        "-D",
        "-U",
        "-L",
        "-l",
        "-u",
        "-T",
        "--param",
        "-target",
        "-arch",
        "-G",
        "-z",
        "-V",
        "-b",
        "-A",
        "-include",
        "-imacros",
        "-aux-info",
        "-dumpdir",
        "-dumpbase",
        "-dumpbase-ext",
        "-specs",
        "--sysroot",
        "-isysroot",
        "-wrapper",
        "-B",
    }
)

# Refused outright: each runs a program, loads code, reads a file from the server
# or writes one where it chooses. Matched as prefixes, so joined forms are caught too.
_REFUSED_PREFIXES: tuple[tuple[str, str], ...] = (
    ("-fplugin", "loads a compiler plugin"),
    ("-fpass-plugin", "loads an LLVM pass plugin"),
    ("-iplugindir", "sets where plugins load from"),
    ("-wrapper", "runs the compiler's subprocesses under another program"),
    ("-B", "makes the compiler run programs from another directory"),
    ("-specs", "loads a specs file, which can run programs"),
    ("--specs", "loads a specs file, which can run programs"),
    ("--config", "loads a clang config file"),
    ("-fdump-", "writes compiler dump files"),
    ("-save-temps", "writes intermediate files where it chooses"),
    ("-dumpdir", "chooses where auxiliary files are written"),
    ("-dumpbase", "chooses where auxiliary files are written"),
    ("-aux-info", "writes a file where it chooses"),
    ("-fprofile-use", "reads profile files from the server"),
    ("-fprofile-instr-use", "reads profile files from the server"),
    ("-fprofile-sample-use", "reads profile files from the server"),
    ("-fauto-profile", "reads profile files from the server"),
    ("-include", "reads a file from the server"),
    ("-imacros", "reads a file from the server"),
    ("--sysroot", "reads files from a directory of the server"),
    ("-isysroot", "reads files from a directory of the server"),
    ("-Wp,", "passes options to the preprocessor, which can write files"),
    ("-Xpreprocessor", "passes options to the preprocessor, which can write files"),
    ("-E", "only preprocesses, and only compile jobs run here"),
    ("-x", "changes how the input is read (distcc clients never send it)"),
)
_ALLOWED_DASH_E = frozenset({"-EB", "-EL"})  # endianness flags on some targets, not -E

# gcc's driver maps double-dash spellings (and their abbreviations) onto other options:
# --plugin is -fplugin, --prefix is -B, --for-assembler is -Wa, and any other --NAME is
# -fNAME. Rather than mirror that table, only these long forms pass.
_ALLOWED_LONG = frozenset(
    {
        "--param",
        "--compile",
        "--assemble",
        "--debug",
        "--pedantic",
        "--pedantic-errors",
        "--verbose",
        "--no-warnings",
        "--ansi",
        "--pipe",
        "--coverage",
        "--optimize",
    }
)
_ALLOWED_LONG_PREFIXES = ("--param=", "--std=", "--target=", "--optimize=")
_LONG_MODE_ARGS = frozenset({"--compile", "--assemble"})

# Options whose value is only a string (never opened), so a path in it is harmless.
_STRING_VALUE_PREFIXES = (
    "-fdebug-prefix-map=", "-ffile-prefix-map=", "-fmacro-prefix-map=",
    "-fprofile-prefix-map=", "-fdebug-compilation-dir=", "-fcoverage-compilation-dir=",
    "-D", "-U", "-I", "-L", "-Wl,",
)  # fmt: skip
_CLANG_REFUSED = ("-load", "-plugin", "-add-plugin", "-fplugin", "-fpass-plugin", "-load-pass")
_ASSEMBLER_REFUSED = ("-a", "--MD", "-o", "@", "--defsym")
_MODE_ARGS = frozenset({"-c", "-S"})
_PREPROCESS_ONLY = frozenset({"-M", "-MM"})


class PolicyViolation(Exception):
    """The job was refused; ``reason`` says why in words a user can act on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Plan:
    """An accepted job: how to run it once the input and output paths are known."""

    compiler: str
    compiler_path: str
    args: tuple[str, ...]
    """argv[1:] without the input file and without any ``-o``."""
    source_suffix: str
    input_name: str
    output_name: str

    def command(self, input_path: str, output_path: str) -> list[str]:
        return [self.compiler_path, *self.args, input_path, "-o", output_path]


def _is_outside(path: str) -> bool:
    """True for a path that could name a file outside the job's directory."""
    return os.path.isabs(path) or ".." in path.replace("\\", "/").split("/")


def _judge_compiler(name: str, compilers: Mapping[str, str]) -> str:
    if not name or "/" in name or "\\" in name:
        raise PolicyViolation(f"compiler must be a bare name, not a path: {name!r}")
    if name in FORBIDDEN_COMPILER_NAMES:
        raise PolicyViolation(f"{name!r} is not a compiler")
    path = compilers.get(name)
    if path is None:
        raise PolicyViolation(f"compiler {name!r} is not on this server's allowlist")
    return path


def _judge_option(arg: str, value: str | None) -> None:
    """Refuse ``arg`` (with its separate ``value``, if any) when it escapes the job."""
    if (
        arg.startswith("--")
        and arg not in _ALLOWED_LONG
        and not arg.startswith(_ALLOWED_LONG_PREFIXES)
    ):
        raise PolicyViolation(
            f"{arg!r} is refused: gcc maps long options onto others (--plugin is -fplugin, "
            "--prefix is -B), so only a few known ones are allowed"
        )
    if "=" in arg and not arg.startswith(_STRING_VALUE_PREFIXES):
        target = arg.split("=", 1)[1]
        if _is_outside(target) or _is_outside(target.split(",")[-1]):
            raise PolicyViolation(
                f"{arg!r} is refused: it names a file outside the job (absolute or '..')"
            )
    if arg in ("-Xclang", "-MF") and value is not None and _is_outside(value):
        raise PolicyViolation(f"{arg} {value!r} is refused: it names a file outside the job")
    if arg in _PREPROCESS_ONLY:
        raise PolicyViolation(f"{arg!r}: only compile jobs run here")
    if arg not in _ALLOWED_DASH_E:
        for prefix, why in _REFUSED_PREFIXES:
            if arg.startswith(prefix):
                raise PolicyViolation(f"{arg!r} is refused: it {why}")
    if arg == "-Xclang" and value is not None and value.startswith(_CLANG_REFUSED):
        raise PolicyViolation(f"-Xclang {value!r} is refused: it loads code into the compiler")
    if arg.startswith("-Wa,") or arg == "-Xassembler":
        pieces = arg[4:].split(",") if arg.startswith("-Wa,") else [value or ""]
        for piece in pieces:
            if piece.startswith(_ASSEMBLER_REFUSED) or "/" in piece:
                raise PolicyViolation(
                    f"assembler option {piece!r} is refused: it can read or write files"
                )
    if arg.startswith("-MF") and len(arg) > 3 and _is_outside(arg[3:]):
        raise PolicyViolation(f"{arg!r} is refused: it writes outside the job")


def judge(argv: tuple[str, ...] | list[str], compilers: Mapping[str, str]) -> Plan:
    """Accept ``argv`` as a compile job, or raise :class:`PolicyViolation`.

    ``compilers`` maps each allowlisted bare name to the absolute path that runs.
    """
    if not argv:
        raise PolicyViolation("empty command")
    compiler = argv[0]
    compiler_path = _judge_compiler(compiler, compilers)
    args: list[str] = []
    inputs: list[str] = []
    outputs: list[str] = []
    mode_seen = False
    for arg in argv[1:]:
        # gcc expands @file wherever it stands, option values included.
        if arg.startswith("@"):
            raise PolicyViolation(f"{arg!r} is refused: @file reads arguments from the server")
    i = 1
    while i < len(argv):
        arg = argv[i]
        value = argv[i + 1] if arg in _TAKES_VALUE and i + 1 < len(argv) else None
        if arg in _TAKES_VALUE and value is None:
            raise PolicyViolation(f"{arg!r} is missing its value")
        if arg == "-o" or (arg.startswith("-o") and len(arg) > 2):
            outputs.append(value if arg == "-o" else arg[2:])  # type: ignore[arg-type]
            i += 2 if arg == "-o" else 1
            continue
        if arg.startswith("-") and arg != "-":
            _judge_option(arg, value)
            mode_seen = mode_seen or arg in _MODE_ARGS or arg in _LONG_MODE_ARGS
            args.append(arg)
            if value is not None:
                args.append(value)
                i += 1
        else:
            inputs.append(arg)
        i += 1

    if not mode_seen:
        raise PolicyViolation("only compile jobs (-c or -S) run here")
    if len(inputs) != 1:
        raise PolicyViolation(f"a job compiles exactly one source file, got {inputs!r}")
    input_name = inputs[0]
    extension = input_name.rsplit(".", 1)[-1] if "." in os.path.basename(input_name) else ""
    suffix = PREPROCESSED_SUFFIX.get(extension)
    if suffix is None:
        raise PolicyViolation(f"{input_name!r} is not a C, C++ or Objective-C source file")
    if len(outputs) > 1:
        raise PolicyViolation("more than one -o")
    output_name = outputs[0] if outputs else _default_output(input_name, "-S" in args)
    if not output_name or _is_outside(output_name):
        raise PolicyViolation(
            f"output {output_name!r} is refused: absolute and '..' output paths"
            " would write outside the job"
        )
    return Plan(
        compiler=compiler,
        compiler_path=compiler_path,
        args=tuple(args),
        source_suffix=suffix,
        input_name=input_name,
        output_name=output_name,
    )


def _default_output(input_name: str, assemble_only: bool) -> str:
    stem = os.path.splitext(os.path.basename(input_name))[0]
    return stem + (".s" if assemble_only else ".o")
