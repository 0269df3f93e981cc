"""The judge of a pump job's command line: as the client typed it, not preprocessed.

In pump mode the preprocessor runs on the server, so options that are dead for a
preprocessed source come alive: the include directories and files (``-I``,
``-isystem``, ``-iquote``, ``-idirafter``, ``-include``, ``-imacros``) are opened, and
``-MF`` writes the dependency file. Their values are checked here to name something of
the job's own tree or a system include directory (wire.pump.Tree.visible); the rest of
the command line is judged exactly as a plain job's (daemon/judge.py), so every other
refusal stands. What runs is the command line as sent, in the job's sandbox at the
client's own paths (server/pump.py), plus the server's own ``-MF`` last (the last one
wins in gcc and clang), so nothing is rewritten that could change the object.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, replace

from daemon.judge import Judge, Refused
from daemon.judge_values import response_file_refusal
from daemon.logged import quoted
from wire.args import scan
from wire.events import PumpRequest
from wire.pump import Tree, TreeRefused, check_tree, path_parts

SEARCHED = frozenset({"-I", "-isystem", "-iquote", "-idirafter"})
"""Options whose value is a directory the preprocessor searches: under one of the
tree's own top-level names (where only the tree is: a directory not sent does not
exist there) or a system include directory."""
READ = frozenset({"-include", "-imacros"})
"""Options whose value is a file the preprocessor reads: one sent, or a system header."""
OPENED = SEARCHED | READ
COMPOSED = frozenset({"-iprefix", "-iwithprefix", "-iwithprefixbefore"})
"""Include directories put together from pieces (-iprefix then -iwithprefix): refused
in pump mode rather than followed."""
DEPENDENCY_FILE = "-MF"
CARRIERS = frozenset({"-Wp,", "-Xpreprocessor"})
"""Options for the preprocessor itself: refused in pump mode (only -D and -U pass
there, which the driver takes directly)."""


@dataclass(frozen=True, slots=True)
class PumpJob:
    """An accepted pump job."""

    compiler: str
    """The compiler's bare name."""
    argv: tuple[str, ...]
    """As the client sent it (argv[0] as sent)."""
    input_path: str
    """The source, absolute, one of the tree's files."""
    output_path: str
    """Where the object is written, absolute, inside the tree."""
    output_given: bool
    """Whether ``-o`` was given (else the server names the default one explicitly)."""

    def command(self, compiler_path: str, deps_path: str) -> list[str]:
        """What runs: the command line as sent, with the server's dependency file."""
        command = [compiler_path, *self.argv[1:]]
        if not self.output_given:
            command += ["-o", self.output_path]
        if "-MD" not in command and "-MMD" not in command:
            command.append("-MMD")
        return [*command, DEPENDENCY_FILE, deps_path]


def accept_pump(
    judge: Judge,
    request: PumpRequest,
    system_dirs: Sequence[str],
    reserved_tops: frozenset[str] | Sequence[str],
    reserved_paths: Sequence[str] = (),
    own_dirs: Sequence[str] | None = None,
) -> tuple[PumpJob, Tree]:
    """A pump request's tree (wire.pump.check_tree) and its judged job, or
    :class:`Refused` with why. Links may lead to any of ``system_dirs``; with
    ``own_dirs`` (the job's compiler's), only those are the tree's system directories
    after: what its options may name and its sandbox holds (a gcc job's must hold
    nothing of clang's, which its key does not cover: a twenty-first review). Linear in
    the request's size, which may be large: call it off an event loop."""
    try:
        tree = check_tree(
            request,
            system_dirs=system_dirs,
            reserved_tops=reserved_tops,
            reserved_paths=reserved_paths,
        )
    except TreeRefused as exc:
        raise Refused(str(exc)) from None
    if own_dirs is not None:
        tree = replace(tree, system_dirs=tuple(own_dirs))
    return judge_pump(judge, request.argv, tree), tree


def _absolute(cwd: str, value: str) -> str:
    return posixpath.normpath(posixpath.join(cwd, value))


def judge_pump(judge: Judge, argv: Sequence[str], tree: Tree) -> PumpJob:
    """Accept ``argv`` as a pump job in ``tree``, or raise :class:`Refused`."""
    scanned = scan(argv, start=1, table=judge.table)
    taken: set[int] = set()
    output: str | None = None
    for option in scanned.options:
        name = option.spec.spelling if option.spec is not None else option.text
        if name in COMPOSED or name in CARRIERS:
            raise Refused(f"{quoted(option.text)} is not served in pump mode")
        if option.spec is not None and option.spec.kind == "output":
            output = option.value
        value = option.value
        if value is None or name not in (*OPENED, DEPENDENCY_FILE):
            continue
        # Taken out of what the plain judge sees, so checked here as it would: an @FILE
        # value is read as more arguments (gcc -I @F by the driver, -I@F by cc1).
        shown = option.text if option.value_index is None else f"{option.text} {value}"
        reason = response_file_refusal(value, shown)
        if reason is not None:
            raise Refused(reason)
        if name in OPENED:
            where = _absolute(tree.cwd, value)
            sent = where in tree.names if name in READ else tree.visible(where)
            if value.startswith(("=", "$")) or not (sent or tree.in_system_dirs(where)):
                raise Refused(
                    f"{quoted(option.text)} {quoted(value)} names {quoted(where)}, which is "
                    "neither in the files sent nor a system include directory"
                )
        taken.add(option.index)
        if option.value_index is not None:
            taken.add(option.value_index)
    # Judged as a plain job without them (they are the pump job's own, checked above).
    job = judge.judge([arg for index, arg in enumerate(argv) if index not in taken])
    source = _absolute(tree.cwd, job.input_name)
    if source not in tree.names:
        raise Refused(f"the source {quoted(job.input_name)} is not among the files sent")
    if output is None:
        stem = posixpath.splitext(posixpath.basename(source))[0]
        target = posixpath.join(tree.cwd, stem + job.output_suffix)
    else:
        target = _absolute(tree.cwd, output)
    try:
        parts = ["", *path_parts(target, "the output")]
    except TreeRefused as exc:  # (as deep and long as a name sent, at most)
        raise Refused(str(exc)) from None
    if len(parts) < 3 or parts[1] not in tree.tops:
        raise Refused(f"the output {quoted(target)} is not inside the files sent")
    names = tree.names
    for end in range(2, len(parts)):  # (its directories are made: none may be a file)
        if "/".join(parts[:end]) in names:
            raise Refused(f"the output {quoted(target)} is under a file or link sent")
    return PumpJob(job.compiler, tuple(argv), source, target, output is not None)
