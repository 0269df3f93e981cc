"""Which compilers this server runs: the allowlisted names found on PATH (never
distcc's masquerade directory), each name's target-prefixed aliases that are the same
binary, and each one's identity (its ``--version`` line and the digest of the binary)."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
import shutil
import subprocess

from cache.path_rules import CLANG, GCC, compiler_family
from daemon.config import ConfigError

MASQUERADE_DIR = "/usr/lib/distcc"
DEFAULT_COMPILER_NAMES = ("gcc", "g++", "cc", "c++", "clang", "clang++")


def search_path() -> str:
    """PATH without distcc's masquerade dir: there, gcc would be distcc itself."""
    parts = os.environ.get("PATH", os.defpath).split(os.pathsep)
    return os.pathsep.join(p for p in parts if os.path.realpath(p) != MASQUERADE_DIR)


def default_compiler_names() -> list[str]:
    names = list(DEFAULT_COMPILER_NAMES)
    with contextlib.suppress(OSError):
        names += sorted(os.listdir(MASQUERADE_DIR))
    return list(dict.fromkeys(names))


def resolve_compilers(names: list[str], explicit: bool) -> dict[str, str]:
    """Map each allowlisted name to the binary that runs for it.

    Names given explicitly must exist; defaults that are not installed are skipped. An
    explicit name also admits its target-prefixed aliases (``x86_64-linux-gnu-gcc`` for
    ``gcc``) that are the very same binary: Debian's client rewrites ``gcc`` to that
    name before sending, so ``--compiler gcc`` alone would refuse every gcc job.
    """
    path = search_path()
    resolved: dict[str, str] = {}
    for name in names:
        found = shutil.which(name, path=path)
        if found is None or os.path.basename(os.path.realpath(found)) == "distcc":
            if explicit:
                raise ConfigError(f"--compiler {name!r} is not on PATH")
            continue
        resolved[name] = os.path.abspath(found)
        if explicit:
            for alias, binary in same_binary_aliases(name, found, path).items():
                resolved.setdefault(alias, binary)
    if not resolved:
        raise ConfigError("no allowed compiler is installed")
    return resolved


def same_binary_aliases(name: str, found: str, path: str) -> dict[str, str]:
    """``TARGET-name`` on ``path`` that resolve to the same file as ``found``."""
    target = os.path.realpath(found)
    aliases: dict[str, str] = {}
    for directory in path.split(os.pathsep):
        with contextlib.suppress(OSError):
            for entry in os.listdir(directory or "."):
                alias = os.path.join(directory, entry)
                if (
                    entry.endswith(f"-{name}")
                    and entry.count("-") >= 2  # a GNU target triplet, not e.g. "c99-gcc"
                    and entry not in aliases
                    and os.path.realpath(alias) == target
                ):
                    aliases[entry] = os.path.abspath(alias)
    return aliases


def compiler_identities(
    compilers: dict[str, str], versions: dict[str, str]
) -> dict[str, dict[str, str]]:
    """Each compiler's path, first line of ``--version`` (as the sandbox check read it)
    and the digest of its toolchain (:func:`toolchain_digest`: its identity for the
    result cache). Reads every file of each toolchain: call it off the event loop."""
    digests: dict[str, str] = {}
    found = {}
    for name, path in compilers.items():
        real = os.path.realpath(path)
        if real not in digests:
            digests[real] = toolchain_digest(real, versions.get(name, ""))
        found[name] = {"path": path, "version": versions.get(name, "unknown"),
                       "digest": digests[real]}  # fmt: skip
    return found


HELPERS = ("cc1", "cc1plus", "cc1obj", "cc1objplus", "as")
"""The programs a gcc driver runs to compile and assemble (``-print-prog-name=``; clang
compiles in its own process, and runs ``as`` from PATH when asked to)."""
_LIBRARY = re.compile(r"=>\s*(/\S+)")
LOADER = next(iter(sorted(glob.glob("/lib64/ld-linux*.so*") + glob.glob("/lib/ld-linux*.so*"))),
              None)  # fmt: skip
"""The dynamic loader: ``LOADER --list FILE`` is what ldd runs, without its shell."""


def toolchain_files(driver: str, version: str = "") -> list[str]:
    """The files whose bytes make a compiler's objects: its driver, the programs it runs
    to compile and assemble, and the shared libraries each of them loads (binutils'
    as, gcc's cc1 and its isl, clang's libLLVM are upgraded apart from the driver: a
    second review had two servers that differ in them share entries). ``version``: its
    first ``--version`` line, which says whether it is clang."""
    files = {os.path.realpath(driver)}
    family = compiler_family(version)
    # Asked only of a gcc driver itself, an ELF binary that says it is gcc: a wrapper
    # script may do anything with an option it does not expect (a test's hang-cc,
    # which passes --version on, hangs); its own bytes are what is hashed then.
    if family == GCC and not _is_elf(driver):
        family = None
    helpers = HELPERS if family == GCC else ("as",) if family == CLANG else ()
    for helper in helpers:
        named = helper
        if family == GCC:
            try:
                named = subprocess.run([driver, f"-print-prog-name={helper}"],
                                       capture_output=True, text=True, timeout=10,
                                       check=False).stdout.strip()  # fmt: skip
            except (OSError, subprocess.SubprocessError):
                continue
        found = named if "/" in named else (shutil.which(named) if named else None)
        if found and os.path.isfile(found):
            files.add(os.path.realpath(found))
    for program in sorted(files):
        command = [LOADER, "--list", program] if LOADER else ["ldd", program]
        try:
            linked = subprocess.run(command, capture_output=True, text=True, timeout=10,
                                    check=False).stdout  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            continue
        files.update(os.path.realpath(m) for m in _LIBRARY.findall(linked) if os.path.isfile(m))
    return sorted(files)


def _is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"\x7fELF"
    except OSError:
        return False


def toolchain_digest(driver: str, version: str = "") -> str:
    """sha256 over the driver's bytes and, for each other file of
    :func:`toolchain_files`, its path, size and modification time (a package upgrade
    changes them; hashing 300 MB of libraries took most of a second at every start)
    ("unknown" when the driver cannot be read)."""
    driver_digest = file_digest(driver)
    if driver_digest == "unknown":
        return "unknown"
    h = hashlib.sha256(b"distlb-toolchain-v1\0" + driver_digest.encode())
    real = os.path.realpath(driver)
    for path in toolchain_files(driver, version):
        if path == real:
            continue  # (by its bytes above: the same binary elsewhere is the same compiler)
        with contextlib.suppress(OSError):
            st = os.stat(path)
            h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def file_digest(path: str) -> str:
    """sha256 of the binary a compiler name runs (its identity for the result cache)."""
    try:
        with open(os.path.realpath(path), "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return "unknown"
