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

What a backend refused as a missing compiler (a distlb server's exit 110: its report
was stale; distccd closes the connection unanswered when a compiler is not in its
whitelist) is taken as missing there until its report says otherwise, or for
:data:`MISSING_HOLD_S` (a distccd has no report to say so).

The answer is kept per compiler name and computed again only after something it
depends on changed (:meth:`CompilerRouting.changed`: a report whose compilers differ,
a backend entering or leaving rotation, a reload, a refusal), so a job pays a lookup.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from balancer.routing.backend import Backend

MISSING_HOLD_S = 300.0
"""How long a compiler a backend refused is taken as missing there, without a report."""
_TRIPLET = re.compile(r"[A-Za-z0-9_.]+-[A-Za-z0-9_.]+-[A-Za-z0-9_.-]+")

IdentityMode = Literal["any", "majority", "pinned"]
IDENTITY_MODES = ("any", "majority", "pinned")

GroupKey = tuple[str, str]
"""(version, digest): digest "" where the backend does not say (distccd)."""
UNKNOWN: GroupKey = ("", "")


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


class CompilerMissing(Exception):
    """A backend answered a job with distcc's "no such compiler" (exit 110): its report
    was stale, or it is a distccd that lacks it. The job goes elsewhere."""


def base_name(compiler: str) -> str:
    """``gcc`` for ``x86_64-linux-gnu-gcc`` (what Debian's distcc client sends for
    ``gcc``); any other name as it is."""
    prefix, _, name = compiler.rpartition("-")
    return name if name and _TRIPLET.fullmatch(prefix) else compiler


def listed_offers(listed: frozenset[str], compiler: str) -> bool:
    """Whether a spec's ``compilers=`` list covers ``compiler``: by its name, or by its
    target-prefixed name (:func:`base_name`)."""
    return compiler in listed or base_name(compiler) in listed


@dataclass(frozen=True)
class Route:
    """Where jobs for one compiler name may go."""

    exclude: frozenset[str]
    """Backends not to pick for it (lacking it, or outside the chosen group)."""
    offered: bool
    """Some backend in rotation offers it."""
    pending: bool = False
    """Some backend not yet checked (at start, after a reload) may offer it: a job
    waits for it rather than being turned away."""
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
    missing: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    """Per backend, compilers it refused as missing, until when (a report that differs
    clears them)."""
    compiled: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    """Per backend, compilers it has compiled with (a distccd that then closes a job
    unanswered has failed, not refused the compiler)."""
    clock: Callable[[], float] = time.monotonic
    _valid_until: float = float("inf")
    probed: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    """Per backend without a report of its compilers (distccd), versions its probes'
    objects recorded, per compiler name."""
    _routes: dict[str, Route] = field(default_factory=dict)

    def changed(self) -> None:
        """Something a route depends on changed: compute each again when next asked."""
        self._routes.clear()
        self._valid_until = float("inf")

    def refused(self, backend: str, compiler: str) -> None:
        """``backend`` answered a job for ``compiler`` with distcc's "no such compiler"."""
        self.missing[backend][compiler] = self.clock() + MISSING_HOLD_S
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
        until = self.missing.get(backend.name, {}).get(compiler)
        if until is not None:
            if until > self.clock():
                self._valid_until = min(self._valid_until, until)
                return False
            del self.missing[backend.name][compiler]
        listed = backend.spec.compilers
        if listed is not None:
            return listed_offers(listed, compiler)
        if backend.spec.kind == "distccd":
            return True  # (it says nothing of its compilers: as distcc itself assumes)
        report = backend.report
        return report is not None and compiler in report.compilers

    def key(self, backend: Backend, compiler: str) -> GroupKey:
        """The identity of ``compiler`` on ``backend`` as it says: (version, digest), the
        digest "" where it does not say (distccd: the version its probe's object
        recorded)."""
        report = backend.report
        if report is not None and compiler in report.compilers:
            version, digest = report.compilers[compiler]
            return version_key(version), digest
        probed = self.probed.get(backend.name, {})
        found = probed.get(compiler) or probed.get(base_name(compiler)) or ""
        return version_key(found), ""

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
        if self.clock() >= self._valid_until:
            self.changed()  # a refusal has run out
        cached = self._routes.get(compiler)
        if cached is None:
            cached = self._routes[compiler] = self._route(list(backends), compiler)
        return cached

    def _route(self, backends: list[Backend], compiler: str) -> Route:
        offering = [b for b in backends if self.offers(b, compiler)]
        exclude = {b.name for b in backends} - {b.name for b in offering}
        in_rotation = [b for b in offering if b.healthy]
        keys = self._keys(offering, compiler)
        groups: dict[GroupKey, list[Backend]] = defaultdict(list)
        for backend in offering:
            groups[keys[backend.name]].append(backend)
        names = {key: tuple(sorted(b.name for b in members)) for key, members in groups.items()}
        chosen = self._choose(compiler, {k: v for k, v in groups.items() if k != UNKNOWN})
        if chosen is not None:
            # (a backend that says nothing of its version cannot be told apart from the
            # chosen group: it stays, as with ``any``)
            exclude |= {b.name for b in offering if keys[b.name] not in (chosen, UNKNOWN)}
        offered = any(b.name not in exclude for b in in_rotation)
        pending = any(
            (not b.healthy and b.consecutive_fail == 0 and b.name not in exclude)
            or (b.report is None and b.spec.kind == "distlb" and b.consecutive_fail == 0)
            for b in backends
        )
        return Route(frozenset(exclude), offered, pending, chosen, names)

    def _keys(self, offering: list[Backend], compiler: str) -> dict[str, GroupKey]:
        """Each backend's group: its identity, where a backend that says no digest
        joins the group of the same version that has the most slots (it cannot be told
        apart from it); one without a version is UNKNOWN, which the identity choice
        never keeps out."""
        said = {b.name: self.key(b, compiler) for b in offering}
        slots: dict[GroupKey, int] = defaultdict(int)
        for backend in offering:
            if said[backend.name][1]:
                slots[said[backend.name]] += backend.capacity
        keys = {}
        for backend in offering:
            version, digest = said[backend.name]
            if not digest and version:
                known = [k for k in slots if k[0] == version]
                if known:
                    keys[backend.name] = max(known, key=lambda k: (slots[k], k))
                    continue
            keys[backend.name] = (version, digest)
        return keys

    def _choose(self, compiler: str, groups: Mapping[GroupKey, list[Backend]]) -> GroupKey | None:
        pin = self.pins.get(compiler) or self.pins.get(base_name(compiler))
        if self.mode == "any" or (len(groups) < 2 and pin is None):
            return None
        if self.mode == "pinned" and pin is not None:
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
            return (sum(b.capacity for b in members if b.healthy), len(members), key)

        return max(groups, key=weight)
