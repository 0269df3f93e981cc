"""One source tree checked out in two directories, each compiled as distcc does it: the
client preprocesses in its own directory (with the job's flags, ``-E``), a server
compiles the text in a directory of its own (the same for every job, as /tmp is in the
sandbox), from ``input`` + the preprocessed suffix. What the key says of the two jobs is
set beside what the compiler made of them (tests/integration/test_cache_paths_gcc.py)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from cache import CompilerIdentity, cache_key, job_digest
from daemon.judge import Judge

JUDGE = Judge()
DEBUG_SECTIONS = (".debug_", ".rela.debug_")


@cache
def identity(compiler: str) -> CompilerIdentity:
    """The identity a server publishes for ``compiler`` (its first ``--version`` line)."""
    found = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True)
    return CompilerIdentity(found.stdout.splitlines()[0], "0" * 64)


@dataclass
class Compiled:
    key: str
    status: int
    obj: bytes
    stderr: bytes
    text: bytes
    paths: tuple[bytes, ...]


def place(root: Path, files: dict[str, str]) -> Path:
    """``files`` (relative path -> content) written under ``root``."""
    shutil.rmtree(root, ignore_errors=True)
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


def compile_as_distcc(
    compiler: str,
    flags: list[str],
    root: Path,
    main: str,
    server_dir: Path,
    *,
    absolute: bool = True,
    share_across_dirs: bool = False,
    mode: str = "-c",
    cpp_flags: tuple[str, ...] = (),
) -> Compiled:
    """``compiler flags mode MAIN`` run from ``root`` (MAIN given by its absolute path
    when ``absolute``, as CMake does), the way distcc runs it; and its key.
    ``cpp_flags`` (``-I``...) are the preprocessor's only: distcc strips them from the
    command it sends."""
    source = str(root / main) if absolute else main
    preprocessed = subprocess.run([compiler, *flags, *cpp_flags, "-E", source], cwd=root,
                                  capture_output=True, timeout=120, check=False)  # fmt: skip
    assert preprocessed.returncode == 0, preprocessed.stderr.decode()
    text = preprocessed.stdout
    job = JUDGE.judge([compiler, *flags, mode, source, "-o", "out"])
    digest = job_digest(1, job.argv, text, share_across_dirs)
    shutil.rmtree(server_dir, ignore_errors=True)
    server_dir.mkdir(parents=True)
    input_name = "input" + job.source_suffix
    (server_dir / input_name).write_bytes(text)
    output = server_dir / ("output" + job.output_suffix)
    command = job.command(compiler, str(server_dir / input_name), str(output))
    run = subprocess.run(command, cwd=server_dir, capture_output=True, timeout=120, check=False)
    obj = output.read_bytes() if run.returncode == 0 else b""
    key = cache_key(digest, identity(compiler))
    return Compiled(key, run.returncode, obj, run.stderr, text, digest.paths)


def include_flags(root: Path, absolute: bool) -> tuple[str, ...]:
    """``-I`` for a tree's include/ directory, as CMake (absolute) or make gives it."""
    return (f"-I{root / 'include'}",) if absolute else ("-Iinclude",)


def local_object(
    compiler: str, flags: list[str], root: Path, main: str, absolute: bool, two_step: bool = False
) -> bytes:
    """The object a plain local compile in ``root`` makes; ``two_step``: preprocessed
    first, then the text compiled, both in ``root`` (with -g, what any distcc build of
    one's own job gives: macro expansion moves the columns debug info records)."""
    source = str(root / main) if absolute else main
    out = root / ".local.o"
    includes = include_flags(root, absolute)
    if two_step:
        text = root / (".local" + JUDGE.judge([compiler, "-c", main]).source_suffix)
        subprocess.run([compiler, *flags, *includes, "-E", source, "-o", str(text)], cwd=root,
                       capture_output=True, timeout=120, check=True)  # fmt: skip
        source, includes = str(text), ()
    subprocess.run([compiler, *flags, *includes, "-c", source, "-o", str(out)], cwd=root,
                   capture_output=True, timeout=120, check=True)  # fmt: skip
    return out.read_bytes()


def sections(obj: bytes, scratch: Path) -> dict[str, bytes]:
    """Each ELF section's name and its bytes (readelf -x)."""
    path = scratch / "sections.o"
    path.write_bytes(obj)
    listing = subprocess.run(["readelf", "-W", "-S", str(path)], capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
    rows = [line.strip() for line in listing.splitlines()]
    names = [row.split("]", 1)[1].split()[0] for row in rows
             if row.startswith("[") and "]" in row and not row.startswith("[Nr]")]  # fmt: skip
    found = {}
    for name in names:
        if name == "NULL" or not name.startswith((".", "_")):
            continue
        dump = subprocess.run(["readelf", "-W", "-x", name, str(path)], capture_output=True,
                              check=False).stdout  # fmt: skip
        found[name] = dump
    return found


def differing_sections(a: bytes, b: bytes, scratch: Path) -> set[str]:
    one, two = sections(a, scratch), sections(b, scratch)
    return {name for name in set(one) | set(two) if one.get(name) != two.get(name)}
