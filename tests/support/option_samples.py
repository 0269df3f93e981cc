"""Sample values for the option table's entries, and how to tell which arguments a
compiler did not know: shared by the tests that run the table against real tools
(tests/integration/test_option_table.py, test_judge_differential.py)."""

from __future__ import annotations

import re
import subprocess
import tempfile

from wire.args import Form, OptionSpec

# Values that the compilers accept, for options whose value kind alone does not say.
SAMPLE_VALUES = {
    "-std=": "c11", "-finput-charset=": "UTF-8", "-fexec-charset=": "UTF-8",
    "-fwide-exec-charset=": "UTF-32LE", "-fno-builtin-": "memcpy", "-ffixed-": "rbx",
    "-fcall-saved-": "rbx", "-fcall-used-": "rbx", "-fstack-limit-register=": "rsp",
    "-fstack-limit-symbol=": "limit", "-fzero-call-used-regs=": "used",
    "-fbasic-block-sections=": "labels", "-flto=": "auto", "-flto-partition=": "none",
    "-fuse-ld=": "bfd", "-rtlib=": "libgcc", "-unwindlib=": "libgcc", "-stdlib=": "libstdc++",
    "-frandom-seed=": "seed", "-fopt-info-": "missed", "-fasan-shadow-offset=": "0x7fff8000",
    "-fms-compatibility-version=": "19", "-fgnuc-version=": "4.2.1", "-fobjc-runtime=": "gcc",
    "-fconstant-string-class=": "NSString", "-target": "x86_64-linux-gnu",
    "--target=": "x86_64-linux-gnu", "-target-feature": "+sse2", "-march=": "x86-64",
    "-mtune=": "generic", "-mcpu=": "generic", "-fsanitize=": "address",
    "-fno-sanitize=": "address", "-fsanitize-recover=": "address",
    "-fno-sanitize-recover=": "address", "-fsanitize-trap=": "undefined",
    "-fno-sanitize-trap=": "undefined", "-fsanitize-coverage=": "trace-pc",
    "-fno-sanitize-coverage=": "trace-pc", "-fdenormal-fp-math=": "ieee",
    "--param": "max-inline-insns-single=100", "--param=": "max-inline-insns-single=100",
    "-fdebug-prefix-map=": "/a=/b", "-ffile-prefix-map=": "/a=/b",
    "-fmacro-prefix-map=": "/a=/b", "-fprofile-prefix-map=": "/a=/b", "-x": "c",
    "-Wa,": "--noexecstack", "-Xassembler": "--noexecstack", "-Wp,": "-DX",
    "-Xpreprocessor": "-DX", "-Xclang": "-fno-pch-timestamp", "-mllvm": "-inline-threshold=1",
    "-ftrivial-auto-var-init-stop-after=": "1",
    # 0 is "no limit": a limit of 1 would stop the compiler reporting after one error.
    "-ferror-limit=": "0", "-fmax-errors=": "0", "-fmessage-length=": "0",
    "-fabi-version=": "0", "-fdebug-default-version=": "4",  # (1 is too old for both)
    # GNU as names CPUs its own way: x86-64 and generic are the compilers' words.
    "as:-march=": "generic64", "as:-mtune=": "generic64",
}  # fmt: skip
KIND_SAMPLES = {
    "int": "1", "list": "1", "output": "/dev/null", "word": "x", "path": "x", "define": "X",
    "linker": "x",
}  # fmt: skip
"""A value of each kind that every compiler takes (a path kind's needs no real path)."""


def sample(spec: OptionSpec) -> str:
    """A value the compilers accept for ``spec``."""
    in_context = f"{spec.context}:{spec.spelling}"
    if in_context in SAMPLE_VALUES:
        return SAMPLE_VALUES[in_context]
    if spec.spelling in SAMPLE_VALUES:
        return SAMPLE_VALUES[spec.spelling]
    if spec.kind.startswith("choice:"):
        return spec.kind[len("choice:") :].split("|")[0]
    return KIND_SAMPLES.get(spec.kind, "x")


def as_written(spec: OptionSpec) -> list[str]:
    """``spec`` with a sample value, as one or two arguments."""
    if spec.form is Form.FLAG:
        return [spec.spelling]
    if spec.form is Form.SEPARATE:
        return [spec.spelling, sample(spec)]
    return [spec.spelling + sample(spec)]  # joined (an "either" is tried joined)


_QUOTE = "[\u2018\u2019']"  # gcc quotes with typographic quotes under a UTF-8 locale
_UNRECOGNISED = [
    re.compile(r"unrecognized command-line option " + _QUOTE + r"(.+?)" + _QUOTE),
    re.compile(r"unknown argument:? " + _QUOTE + r"(.+?)" + _QUOTE),
    re.compile(r"Unknown command line argument " + _QUOTE + r"(.+?)" + _QUOTE),
    re.compile(r"unrecognized option " + _QUOTE + r"(.+?)" + _QUOTE),
    re.compile(
        r"unsupported argument " + _QUOTE + r"(.+?)" + _QUOTE + r" to option " + _QUOTE + "Wa,"
    ),
    re.compile(r"unsupported option " + _QUOTE + r"(.+?)" + _QUOTE),
]
_DEBUG_LEVEL = re.compile(r"unrecognized debug output level " + _QUOTE + r"(.+?)" + _QUOTE)
"""gcc names a -g option it does not know (clang's -gmlt) without its -g."""
_INVALID_VALUE = re.compile(r"invalid value '[^']*' in '(-[^' =]+=?) ?([^']*)'")
"""clang names a value it does not take (-fdiagnostics-format=text) with a space."""


def unrecognised(command: list[str], said_by: str | None = None) -> set[str]:
    """The arguments the tools said they do not know (each reports them all in one run);
    with ``said_by``, only those that program itself named (``gcc: error: ...``), not a
    program it ran (``cc1: error: ...``)."""
    with tempfile.TemporaryDirectory() as scratch:  # where an -o CANARY would be written
        done = subprocess.run(
            command, cwd=scratch, capture_output=True, text=True, timeout=120, check=False
        )
    return unrecognised_in(done.stderr, said_by)


def unrecognised_in(stderr: str, said_by: str | None = None) -> set[str]:
    """The arguments a tool's ``stderr`` says it does not know (see :func:`unrecognised`)."""
    found: set[str] = set()
    for line in stderr.splitlines():
        if said_by is not None and not line.startswith(f"{said_by}:"):
            continue
        for pattern in _UNRECOGNISED:
            found.update(pattern.findall(line))
        found.update("-g" + level for level in _DEBUG_LEVEL.findall(line))
        found.update(
            option + ("" if option.endswith("=") else "=") + value
            for option, value in _INVALID_VALUE.findall(line)
        )
    return found
