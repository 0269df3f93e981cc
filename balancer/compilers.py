"""Which backends a job's compiler may go to (pure).

A backend offers a compiler when its report names it (distlb servers: ``compilers`` in
``/status``) or its spec lists it (``compilers=gcc:g++`` for distccd; a distccd backend
without the option is taken to offer any). For each compiler name the backends that
offer it are grouped by identity (the version, and the binary's digest where the
backend says it); with ``--compiler-identity majority`` (the default) jobs go only to
the group with the most slots in rotation, with ``pinned`` to the group that
``--pin-compiler NAME=VERSION-or-DIGEST`` names, with ``any`` to every backend that
offers the name. So one build never links objects of two compiler versions, and a
server that lacks a compiler is never sent a job for it.

What a backend refused as a missing compiler (distcc's exit 110: its report was
stale) is taken as missing there until its report says otherwise.

The answer is kept per compiler name and computed again only after something it
depends on changed (:meth:`CompilerRouting.changed`: a report whose compilers differ,
a backend entering or leaving rotation, a reload, a refusal), so a job pays a lookup.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from balancer.backends import Backend

IdentityMode = Literal["any", "majority", "pinned"]
IDENTITY_MODES = ("any", "majority", "pinned")

GroupKey = tuple[str, str]
"""(version, digest): digest "" where the backend does not say (distccd)."""


def version_key(text: str) -> str:
    """The part of a compiler's version line that says which build it is, the same
    whether it comes from ``--version`` ("gcc (Debian 12.2.0-14) 12.2.0") or from an
    object's ``.comment`` ("GCC: (Debian 12.2.0-14) 12.2.0")."""
    text = text.strip().removeprefix("GCC: ")
    paren = text.find("(")
    return text[paren:] if paren > 0 else text


_COMMENT = re.compile(rb"(GCC: \([^\x00]{1,200}|[\w ]{0,40}clang version [^\x00]{1,100})")


def version_in_object(obj: bytes) -> str | None:
    """The compiler's version line an object's ``.comment`` section records, if any."""
    match = _COMMENT.search(obj)
    return match.group(1).decode("utf-8", "replace") if match else None


class NoCompiler(Exception):
    """No backend in rotation offers the job's compiler (in the chosen identity): the
    client compiles locally, at once."""

    history: list[dict[str, object]] = []

    def __init__(self, compiler: str) -> None:
        super().__init__(f"no backend in rotation runs {compiler!r} (in the chosen identity)")
        self.compiler = compiler


class CompilerMissing(Exception):
    """A backend answered a job with distcc's "no such compiler" (exit 110): its report
    was stale, or it is a distccd that lacks it. The job goes elsewhere."""


@dataclass(frozen=True)
class Route:
    """Where jobs for one compiler name may go."""

    exclude: frozenset[str]
    """Backends not to pick for it (lacking it, or outside the chosen group)."""
    offered: bool
    """Some backend in rotation offers it (else the job is turned away at once)."""
    chosen: GroupKey | None = None
    """The identity chosen (None: any, or nothing to choose between)."""
    groups: Mapping[GroupKey, tuple[str, ...]] = field(default_factory=dict)
    """Every identity seen for it, with its backends."""


@dataclass
class CompilerRouting:
    mode: IdentityMode = "majority"
    pins: Mapping[str, str] = field(default_factory=dict)
    """Per compiler name, the version (a substring of its version line) or digest (a
    prefix) jobs must go to, with ``pinned``."""
    missing: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    """Per backend, compilers it refused as missing (cleared by a report that differs)."""
    probed: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    """Per backend without a report of its compilers (distccd), versions its probes'
    objects recorded, per compiler name."""
    _routes: dict[str, Route] = field(default_factory=dict)

    def changed(self) -> None:
        """Something a route depends on changed: compute each again when next asked."""
        self._routes.clear()

    def refused(self, backend: str, compiler: str) -> None:
        """``backend`` answered a job for ``compiler`` with distcc's "no such compiler"."""
        self.missing[backend].add(compiler)
        self.changed()

    def probed_version(self, backend: str, compiler: str, version: str | None) -> None:
        """A probe of ``backend`` compiled with ``compiler``; its object said ``version``."""
        if version is not None and self.probed[backend].get(compiler) != version:
            self.probed[backend][compiler] = version
            self.changed()

    def reported(self, backend: str) -> None:
        """A report with other compilers came from ``backend``: forget its refusals."""
        self.missing.pop(backend, None)
        self.changed()

    def offers(self, backend: Backend, compiler: str) -> bool:
        if compiler in self.missing.get(backend.name, ()):
            return False
        listed = backend.spec.compilers
        if listed is not None:
            return compiler in listed
        if backend.spec.kind == "distccd":
            return True  # (it says nothing of its compilers: as distcc itself assumes)
        report = backend.report
        return report is not None and compiler in report.compilers

    def key(self, backend: Backend, compiler: str) -> GroupKey:
        """The identity of ``compiler`` on ``backend``."""
        report = backend.report
        if report is not None and compiler in report.compilers:
            version, digest = report.compilers[compiler]
            return version_key(version), digest
        return version_key(self.probed.get(backend.name, {}).get(compiler, "")), ""

    def names(self, backends: Iterable[Backend]) -> list[str]:
        """Every compiler name some backend says it runs."""
        found: set[str] = set()
        for backend in backends:
            if backend.report is not None:
                found.update(backend.report.compilers)
            if backend.spec.compilers is not None:
                found.update(backend.spec.compilers)
            found.update(self.probed.get(backend.name, {}))
        return sorted(found)

    def describe(self, backends: list[Backend]) -> dict[str, dict[str, dict[str, object]]]:
        """Per backend, per compiler it offers: its version and whether jobs for it go
        there (``chosen``) or not (``mismatch``: another identity was chosen)."""
        out: dict[str, dict[str, dict[str, object]]] = {b.name: {} for b in backends}
        for compiler in self.names(backends):
            route = self.route(backends, compiler)
            for backend in backends:
                if self.offers(backend, compiler):
                    version, digest = self.key(backend, compiler)
                    chosen = backend.name not in route.exclude
                    out[backend.name][compiler] = {
                        "version": version, "digest": digest[:16], "chosen": chosen,
                        "state": "chosen" if chosen else "mismatch",
                    }  # fmt: skip
        return out

    def route(self, backends: Iterable[Backend], compiler: str) -> Route:
        cached = self._routes.get(compiler)
        if cached is None:
            cached = self._routes[compiler] = self._route(list(backends), compiler)
        return cached

    def _route(self, backends: list[Backend], compiler: str) -> Route:
        offering = [b for b in backends if self.offers(b, compiler)]
        exclude = {b.name for b in backends} - {b.name for b in offering}
        in_rotation = [b for b in offering if b.healthy]
        groups: dict[GroupKey, list[Backend]] = defaultdict(list)
        for backend in offering:
            groups[self.key(backend, compiler)].append(backend)
        names = {key: tuple(sorted(b.name for b in members)) for key, members in groups.items()}
        chosen = self._choose(compiler, groups)
        if chosen is not None:
            exclude |= {b.name for b in offering if self.key(b, compiler) != chosen}
        offered = any(b.name not in exclude for b in in_rotation)
        return Route(frozenset(exclude), offered, chosen, names)

    def _choose(self, compiler: str, groups: Mapping[GroupKey, list[Backend]]) -> GroupKey | None:
        if self.mode == "any" or (len(groups) < 2 and compiler not in self.pins):
            return None
        if self.mode == "pinned" and compiler in self.pins:
            pin = self.pins[compiler]
            for key in sorted(groups):
                version, digest = key
                if (digest and digest.startswith(pin)) or (pin and pin in version):
                    return key
            return ("pinned:" + pin, "")  # nothing runs it: no backend is chosen
        if self.mode == "pinned":
            return None  # (a compiler without a pin: any)

        # majority: the identity with the most slots in rotation (then the most
        # backends, then the name, so every balancer chooses alike)
        def weight(key: GroupKey) -> tuple[int, int, GroupKey]:
            members = groups[key]
            return (sum(b.slots for b in members if b.healthy), len(members), key)

        return max(groups, key=weight)
