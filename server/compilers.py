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
from collections.abc import Collection
from dataclasses import dataclass

from cache import CompilerIdentity
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
_LOADED = re.compile(r"^\s*(/\S+)\s+\(0x", re.MULTILINE)
"""A line of ``LOADER --list`` that names a file with no ``=>``: the loader itself."""
LOADER = next(iter(sorted(glob.glob("/lib64/ld-linux*.so*") + glob.glob("/lib/ld-linux*.so*"))),
              None)  # fmt: skip
"""The dynamic loader: ``LOADER --list FILE`` is what ldd runs, without its shell."""
SANDBOX_SHELL = "/bin/sh"
"""The shell a bubblewrap sandbox waits in before it execs its compiler (and that stays
readable there): part of what a sealed job can read (server/sandbox/sealed.py)."""


@dataclass(frozen=True, slots=True)
class Toolchain:
    """Everything a compiler's job can read in its sealed sandbox, and so everything
    its identity covers: ``files`` and the files under ``dirs`` (real paths), and
    ``names``, the paths the programs find each other by (``/usr/bin/gcc``, ``as`` on
    PATH, a library by its soname, the loader), each a chain of links to a real path."""

    files: tuple[str, ...]
    dirs: tuple[str, ...] = ()
    names: tuple[str, ...] = ()


def toolchain(driver: str, version: str = "") -> Toolchain:
    """The files whose bytes make a compiler's objects: its driver, the programs it runs
    to compile and assemble, and the shared libraries each of them loads (binutils'
    as, gcc's cc1 and its isl, clang's libLLVM are upgraded apart from the driver: a
    second review had two servers that differ in them share entries); the dynamic
    loader and the sandbox's shell (:data:`SANDBOX_SHELL`), which every sandboxed job
    can read; clang's resource directory (its runtime lists, read under
    ``-fsanitize=``) and, for gcc, glibc's iconv modules. ``version``: its first
    ``--version`` line, which says whether it is clang."""
    files = {os.path.realpath(driver)}
    names = {os.path.abspath(driver), SANDBOX_SHELL}
    dirs: set[str] = set()
    # Asked only of a gcc or clang driver itself, an ELF binary that says it is one: a
    # wrapper script may do anything with an option it does not expect (a test's
    # hang-cc, which passes --version on, hangs); its own bytes are what is hashed then.
    family = compiler_family(version) if known_driver(driver, version) else None
    helpers = HELPERS if family == GCC else ("as",) if family == CLANG else ()
    for helper in helpers:
        named = _ask(driver, f"-print-prog-name={helper}") if family == GCC else helper
        found = named if "/" in named else (shutil.which(named) if named else None)
        if found and os.path.isfile(found):
            files.add(os.path.realpath(found))
            names.add(os.path.abspath(found))
    if family == CLANG:
        resource = _ask(driver, "-print-resource-dir")
        if resource.startswith("/") and os.path.isdir(resource):
            dirs.add(os.path.realpath(resource))
    files.add(os.path.realpath(SANDBOX_SHELL))
    if LOADER:
        names.add(LOADER)
    for program in sorted(files):
        command = [LOADER, "--list", program] if LOADER else ["ldd", program]
        try:
            linked = subprocess.run(command, capture_output=True, text=True, timeout=10,
                                    check=False).stdout  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            continue
        for found in _LIBRARY.findall(linked) + _LOADED.findall(linked):
            if os.path.isfile(found):
                files.add(os.path.realpath(found))
                names.add(found)
    if family == GCC:
        # glibc's iconv modules, beside the C library: gcc converts a text from
        # -finput-charset, and its literals to -fexec-charset, with them.
        for library in sorted(files):
            gconv = os.path.join(os.path.dirname(library), "gconv")
            if os.path.basename(library).startswith("libc.so") and os.path.isdir(gconv):
                dirs.add(os.path.realpath(gconv))
    return Toolchain(tuple(sorted(files)), tuple(sorted(dirs)), tuple(sorted(names)))


def known_driver(driver: str, version: str) -> bool:
    """Whether ``driver`` is a gcc or clang driver itself: an ELF binary whose version
    line says which (not a wrapper script, which may run anything and take any time)."""
    return compiler_family(version) in (GCC, CLANG) and _is_elf(driver)


def toolchain_files(driver: str, version: str = "") -> list[str]:
    """The files of :func:`toolchain` (not those under its directories)."""
    return list(toolchain(driver, version).files)


def _ask(driver: str, option: str) -> str:
    """What a compiler driver prints for a ``-print-...`` option ("" when it cannot)."""
    try:
        return subprocess.run([driver, option], capture_output=True, text=True, timeout=10,
                              check=False).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return ""


def _is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"\x7fELF"
    except OSError:
        return False


def toolchain_digest(driver: str, version: str = "") -> str:
    """sha256 over the driver's bytes and, for each other file of :func:`toolchain`
    (those under its directories too), its path, size and modification time (a package
    upgrade changes them; hashing 300 MB of libraries took most of a second at every
    start) ("unknown" when the driver cannot be read)."""
    driver_digest = file_digest(driver)
    if driver_digest == "unknown":
        return "unknown"
    h = hashlib.sha256(b"distlb-toolchain-v2\0" + driver_digest.encode())
    real = os.path.realpath(driver)
    found = toolchain(driver, version)
    under = sorted(
        os.path.join(top, name)
        for directory in found.dirs
        for top, _, names in os.walk(directory)
        for name in names
    )
    for path in [*found.files, *under]:
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


def mark_sandboxes(
    info: dict[str, dict[str, str]], mode: str, sealed: Collection[str]
) -> dict[str, dict[str, str]]:
    """Say in each compiler's entry (:func:`compiler_identities`) which sandbox its jobs
    run in: ``sealed`` (its toolchain only: server/sandbox/sealed.py), ``shared`` (the
    sandbox of every job), or ``none`` (``--sandbox none``). Balancers share the results
    of ``sealed`` compilers only (or trusted unsandboxed ones)."""
    for entry in info.values():
        entry["sandbox"] = (
            "none" if mode == "none" else "sealed" if entry["path"] in sealed else "shared"
        )
    return info


def cache_identities(info: dict[str, dict[str, str]]) -> dict[str, CompilerIdentity]:
    """The identities whose results the server's own cache keeps: each compiler whose
    identity is known and whose jobs run sealed or (``--sandbox none``: the operator's
    choice) unsandboxed; never a compiler whose compiles could read what its key
    leaves out."""
    return {
        name: CompilerIdentity(entry["version"], entry["digest"])
        for name, entry in info.items()
        if entry["digest"] != "unknown" and entry.get("sandbox") != "shared"
    }
