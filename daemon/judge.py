"""The argument judge: which compile jobs may run, decided from argv alone.

One judge serves the server (before it runs anything) and the balancer (before
any backend, a real distccd among them, sees the job). It is an allowlist: every
argument must be an option that ``wire/compiler_options.txt`` knows to be safe
for compiling one preprocessed file, and every value is checked by its kind, in
one place (``daemon/judge_values.py``: never @FILE, a path only where the table
says the value is one).
Options that carry options for another program (``-Wa,``, ``-Xclang``,
``-mllvm``, ``-Wp,``) are judged, piece by piece, by that program's part of the
table. What passes comes back as a :class:`Job` whose ``argv`` is canonical
(daemon/canonical.py): the compiler by its bare name, a fixed ``-o`` and the input
first, ``-x`` rewritten to the preprocessed language, the linker's options left out,
so that every server, a real distccd included, compiles it the same.
The reasoning for each rule is in docs/policy.md.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping, Sequence

from daemon.canonical import Job, NotCanonical, canonical_job
from daemon.judge_values import (
    NESTED_KINDS,
    argument_refusal,
    response_file_refusal,
    value_refusal,
)
from daemon.languages import PREPROCESSED_SUFFIX
from daemon.logged import LOGGED_ARG_CHARS, cut, quoted
from daemon.specs import DEFAULT_TRUSTED_SPECS_DIRS, SpecsCheck, path_only_specs_check
from daemon.verdicts import Verdict, Verdicts, shape_of
from wire.args import REMEMBERED_CHARS, Form, Option, OptionTable, Scan, default_table, scan

__all__ = ["MEMORY", "PREPROCESSED_SUFFIX", "CompilerMissing", "Job", "Judge", "Refused"]

EXIT_BAD_ARGUMENTS = 101
"""distcc's exit code for arguments it will not run (``EXIT_BAD_ARGUMENTS``)."""
EXIT_COMPILER_MISSING = 110
"""distcc's exit code for a compiler it does not have (``EXIT_COMPILER_MISSING``)."""
REASON_CHARS = 2048
"""A reason is cut here, whatever it quotes: it goes to the log, the reply's stderr and
the balancer's dashboard."""

FORBIDDEN_COMPILER_NAMES = frozenset(
    {
        "sh", "bash", "dash", "zsh", "ksh", "csh", "tcsh", "fish", "env", "busybox",
        "python", "python3", "perl", "ruby", "node", "xargs", "nice", "timeout",
        "sudo", "su", "setpriv", "nohup", "exec", "find", "awk", "make",
    }
)  # fmt: skip
"""Never compilers, whatever an allowlist says: each runs arbitrary code."""

BARE_NAME_PREFIXES = ("/usr/bin/", "/bin/")
"""A compiler given with one of these is its bare name (as distccd 3.4 does, distcc
issue #279): CMake's compiler launcher sends ``/usr/bin/cc``."""

_COMPILER_NAME = re.compile(r"[A-Za-z0-9_.+-]+")
COMPILER_SHAPED = re.compile(
    r"(?:[A-Za-z0-9_]+(?:-[A-Za-z0-9_.]+)*-)?"  # a target: x86_64-linux-gnu-, arm-none-eabi-
    r"(?:gcc|g\+\+|cc|c\+\+|clang|clang\+\+|c89-gcc|c99-gcc)"
    r"(?:-[0-9][0-9.]*)?(?:-posix|-win32)?"  # a version: gcc-12, clang-14.0
)
"""What the balancer, which has no allowlist of its own, takes for a compiler's name."""
_NESTED_NAMES = {
    "as": "the assembler",
    "cc1": "clang's front end",
    "llvm": "LLVM",
    "cpp": "the preprocessor",
}
_MODE_OPTIONS = {"-c": ".o", "--compile": ".o", "-S": ".s", "--assemble": ".s"}


class Refused(Exception):
    """The job may not run here; ``reason`` says why in words a user can act on, and
    ``exit_code`` is distcc's code for it (the status of the reply)."""

    def __init__(self, reason: str, exit_code: int = EXIT_BAD_ARGUMENTS) -> None:
        if len(reason) > REASON_CHARS:  # (each argument it quotes is cut already)
            reason = reason[:REASON_CHARS] + "…"
        super().__init__(reason)
        self.reason = reason
        self.exit_code = exit_code

    def message(self, who: str) -> str:
        """The reply's stderr: who refused, and why."""
        return f"{who}: job refused: {self.reason}\n"


class CompilerMissing(Refused):
    """A compiler's name this server does not run. Answered as distccd answers a
    compiler it cannot exec (exit 110, "failed to exec", which distcc's own test suite
    expects), not as a refusal: nothing was wrong with the job but where it was sent."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no compiler {quoted(name)} here", EXIT_COMPILER_MISSING)
        self.name = name

    def message(self, who: str) -> str:
        return f"{who} ERROR: failed to exec {cut(self.name)}: No such file or directory\n"


MEMORY = 16384
"""Accepted arguments remembered (the memory is dropped whole when full)."""
MAX_PIECES = 256
"""Arguments a command line may pass to other programs in all (``-Wa,`` ``-Wp,``
``-Xclang``, ...: real builds pass a few; each costs microseconds to judge, and a
megabyte of ``-Wa,-m,-m,...`` held a daemon's loop for most of a second)."""
LOOP_ARGS = 128
LOOP_ARG_BYTES = 16 * 1024
"""A command line longer than this is judged in a thread: over a millisecond of work
(a few microseconds an argument the judge has not met before)."""


async def judge_off_loop(judge: Judge, argv: Sequence[str]) -> Job:
    """``judge.judge(argv)``; a long command line in a thread, not on the event loop."""
    if len(argv) > LOOP_ARGS or sum(map(len, argv)) > LOOP_ARG_BYTES:
        return await asyncio.to_thread(judge.judge, argv)
    return judge.judge(argv)


def _memorable(option: Option, text: str) -> bool:
    """Whether an accepted argument's verdict depends on nothing but its text (not a
    specs file, whose disk can change, nor a carrier of options for another program),
    and it is short: the memory is bounded in bytes (wire.args.REMEMBERED_CHARS)."""
    spec = option.spec
    return (
        len(text) <= REMEMBERED_CHARS
        and spec is not None
        and spec.kind not in ("specs", *NESTED_KINDS)
    )


def normalize_compiler(name: str) -> str:
    """The bare name for a compiler given as ``/usr/bin/NAME`` or ``/bin/NAME``."""
    for prefix in BARE_NAME_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


class Judge:
    """Decides whether a command line may run, and how (:meth:`judge`).

    ``compilers`` maps the allowlisted bare names to the binaries that run them (a
    server's); None accepts any compiler name that is not a shell or launcher (the
    balancer's: its backends judge the name again). ``allow_options`` are an operator's
    additions: an exact argument, or a prefix ending in ``*`` (its value unchecked).
    """

    def __init__(
        self,
        *,
        compilers: Mapping[str, str] | None = None,
        allow_options: Iterable[str] = (),
        specs_check: SpecsCheck | None = None,
        table: OptionTable | None = None,
        compiler_names: Iterable[str] = (),
    ) -> None:
        self.compilers = compilers
        self._compiler_names = frozenset(compiler_names)
        """With no allowlist (a balancer's): names taken besides the compiler-shaped."""
        allowed = list(allow_options)
        self._allowed_exact = frozenset(a for a in allowed if not a.endswith("*"))
        self._allowed_prefixes = tuple(a[:-1] for a in allowed if a.endswith("*"))
        self._specs_check = specs_check or path_only_specs_check(DEFAULT_TRUSTED_SPECS_DIRS)
        self.table = table or default_table()
        self._accepted: set[str] = set()
        """Single arguments already judged safe: a build repeats the same few hundred."""
        self._verdicts = Verdicts()
        """Whole command lines accepted, by shape (daemon/verdicts.py)."""

    def judge(self, argv: Sequence[str]) -> Job:
        """Accept ``argv`` as a compile job, or raise :class:`Refused`. A command line of
        a shape accepted before (daemon/verdicts.py: the same but for its source and
        output names) has only its names judged; any doubt is judged anew."""
        shape = shape_of(argv)
        if shape is not None:
            verdict = self._verdicts.get(shape)
            if verdict is not None:
                job = self._names_judged(verdict, argv[shape.input_at], argv[shape.output_at])
                if job is not None:
                    return job
        job, scanned = self._judge_anew(argv)
        if shape is not None and scanned.positionals == (shape.input_at,):
            outputs = scanned.outputs()
            if len(outputs) == 1 and outputs[0].value_index == shape.output_at:
                self._verdicts.remember(shape, Verdict(job, outputs[0]), argv)
        return job

    def _names_judged(self, verdict: Verdict, input_name: str, output_name: str) -> Job | None:
        """The job of ``verdict``'s shape with these names, when every rule the full
        judge applies to them alone passes (the rest of the command line, and the facts
        of the names the other rules read, are the shape's); None: judge it anew (which
        refuses it with the full judge's own reason)."""
        if argument_refusal(input_name) is not None or argument_refusal(output_name) is not None:
            return None
        try:
            self._judge_option(verdict.output_named(output_name), "driver", {})
        except Refused:
            return None
        return verdict.job_for(input_name)

    def _judge_anew(self, argv: Sequence[str]) -> tuple[Job, Scan]:
        if not argv:
            raise Refused("empty command", EXIT_COMPILER_MISSING)
        for arg in argv:
            reason = argument_refusal(arg)
            if reason is not None:
                raise Refused(reason)
        compiler = self._judge_compiler(argv[0])
        scanned = scan(argv, start=1, table=self.table)
        if scanned.missing_value is not None:
            raise Refused(f"{quoted(scanned.missing_value.text)} is missing its value")
        nested: dict[str, list[str]] = {context: [] for context in NESTED_KINDS}
        suffix: str | None = None
        accepted = self._accepted
        target = external_as = False
        for option in scanned.options:
            text = option.text
            target = target or text == "-target" or text.startswith("--target=")
            external_as = external_as or text == "-fno-integrated-as"
            if text not in accepted or option.value_index is not None:
                self._judge_option(option, "driver", nested)
                if option.value_index is None and _memorable(option, text):
                    if len(accepted) >= MEMORY:
                        accepted.clear()
                    accepted.add(text)
            if text in _MODE_OPTIONS and suffix != ".s":
                suffix = _MODE_OPTIONS[text]
        if target and external_as:
            # clang then runs the target's own assembler, found on PATH by a name the
            # target chooses (orbis-as for PS4), outside the toolchain (a fifth review)
            raise Refused("-fno-integrated-as is refused with --target: clang would run the "
                          "target's assembler from PATH, not the toolchain's")  # fmt: skip
        pieces = sum(map(len, nested.values()))
        if pieces > MAX_PIECES:
            raise Refused(f"{pieces} arguments passed to other programs (-Wa, -Wp, -Xclang, "
                          f"...): at most {MAX_PIECES} are taken")  # fmt: skip
        for context in ("cc1", "as", "cpp", "llvm"):  # cc1 adds to llvm: judge it last
            self._judge_nested(context, nested)
        if suffix is None:
            raise Refused("only compile jobs (-c or -S) run here")
        try:
            return canonical_job(compiler, argv, scanned, suffix), scanned
        except NotCanonical as exc:
            raise Refused(exc.reason) from None

    def remembered_chars(self) -> int:
        """The characters of argument text this judge remembers, its table's included."""
        return (
            sum(map(len, self._accepted)) + self.table.remembered_chars() + self._verdicts.chars()
        )

    def _judge_compiler(self, given: str) -> str:
        name = normalize_compiler(given)
        if not _COMPILER_NAME.fullmatch(name):
            raise Refused(
                f"compiler {quoted(given)}: give a bare name (or one in /usr/bin or /bin)",
                EXIT_COMPILER_MISSING,
            )
        if name in FORBIDDEN_COMPILER_NAMES:
            raise Refused(f"{quoted(name)} is not a compiler", EXIT_COMPILER_MISSING)
        if self.compilers is not None and name not in self.compilers:
            raise CompilerMissing(name)
        if (
            self.compilers is None
            and name not in self._compiler_names
            and not COMPILER_SHAPED.fullmatch(name)
        ):
            # (perl -c runs a file's BEGIN blocks: a backend without an allowlist of its
            # own must never see a name that is not a compiler's)
            raise Refused(
                f"{quoted(name)} is not the name of a C, C++ or Objective-C compiler "
                "(a balancer takes others with --allow-compiler)",
                EXIT_COMPILER_MISSING,
            )
        return name

    def _allowed_by_operator(self, arg: str) -> bool:
        return arg in self._allowed_exact or arg.startswith(self._allowed_prefixes)

    def _judge_option(self, option: Option, context: str, nested: dict[str, list[str]]) -> None:
        spec, text = option.spec, option.text
        where = "" if context == "driver" else f" (passed to {_NESTED_NAMES[context]})"
        if self._allowed_by_operator(text):
            # Its value is the operator's to vouch for, but never @FILE.
            prefix = next((p for p in self._allowed_prefixes if text.startswith(p)), text)
            reason = response_file_refusal(text[len(prefix) :], text, where)
            if reason is not None:
                raise Refused(reason)
            return
        if spec is None:
            allow = f"={text}" if text.isprintable() and len(text) <= LOGGED_ARG_CHARS else ""
            raise Refused(
                f"{quoted(text)}{where} is not on distlb's list of options known to be safe; "
                f"an operator who has checked it can allow it with --allow-option{allow} "
                "(docs/policy.md)"
            )
        kind, value = spec.kind, option.value
        shown = text if option.value_index is None else f"{text} {value}"
        if kind == "refuse":
            raise Refused(f"{quoted(shown)}{where} is refused: it {spec.reason}")
        if spec.form is Form.FAMILY and self._spelled_like_a_separate_option(context, text):
            raise Refused(
                f"{quoted(text)}{where} is refused: newer compilers read it as "
                f"{quoted(text.split('=', 1)[0])} with its value joined, which would pass "
                "unjudged"
            )
        if value is None:
            return
        reason = value_refusal(
            spec, value, shown, separate=option.value_index is not None, where=where,
            specs_check=self._specs_check,
        )  # fmt: skip
        if reason is not None:
            raise Refused(reason)
        if kind in nested:
            nested[kind] += value.split(",") if option.value_index is None else [value]

    def _spelled_like_a_separate_option(self, context: str, text: str) -> bool:
        """``-mllvm=X``: a family member named like an option that takes the next
        argument (clang 16 reads ``-mllvm=X`` as ``-mllvm X``)."""
        name, equals, _ = text.partition("=")
        found = self.table.lookup(context, name) if equals else None
        return found is not None and found[1] is None and found[0].may_take_next

    def _judge_nested(self, context: str, nested: dict[str, list[str]]) -> None:
        args = nested[context]
        if not args:
            return
        name = _NESTED_NAMES[context]
        for arg in args:  # each is an argument of that program: @FILE there too
            reason = argument_refusal(arg)
            if reason is not None:
                raise Refused(f"{reason} (passed to {name})")
        scanned: Scan = scan(args, context=context, table=self.table)
        if scanned.missing_value is not None:
            raise Refused(
                f"{quoted(scanned.missing_value.text)} (passed to {name}) is missing its value"
            )
        for option in scanned.options:
            self._judge_option(option, context, nested)
        for index in scanned.positionals:
            if not args[index]:
                continue  # -Wa,a,,b: an empty piece
            raise Refused(f"{quoted(args[index])} passed to {name} is not an option")
