"""Who may compile: principal allow and deny lists, re-read when their file changes.

A list file holds one principal per line (``alice@EXAMPLE.COM``); ``#`` starts a
comment; blank lines are ignored. Names are compared whole, realm included:
distccd compares names with the realm cut off, which would let ``alice`` of any
trusted realm in; write the realm. A file is looked at (one ``stat``) at most
once per ``check_interval_s`` and read again only when its inode, size or mtime
changed. A list that cannot be read fails closed: everyone is refused (for an
allow list) or refused too (for a deny list, since we cannot know who is on it).

The deny list errs on the side of refusing: its entries match regardless of case
(a KDC may hand out tickets under another spelling of a name), and an entry
without a realm matches that name in every realm. Anonymous principals
(``WELLKNOWN/ANONYMOUS``) are never allowed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger("distlb.principals")

MAX_LIST_BYTES = 4 * 1024 * 1024
MAX_PRINCIPAL_CHARS = 1024


ANONYMOUS_NAME = "WELLKNOWN/ANONYMOUS"


class ListUnreadable(Exception):
    """A principal list file is missing, unreadable, too large or not text."""


def _without_realm(principal: str) -> str:
    return principal.rpartition("@")[0] if "@" in principal else principal


def is_anonymous(principal: str) -> bool:
    """Kerberos' anonymous principal (``kinit -n``), in any realm."""
    return _without_realm(principal).casefold() == ANONYMOUS_NAME.casefold()


def on_deny_list(principal: str, denied: frozenset[str]) -> bool:
    """Whether a deny list names ``principal``: case-insensitively, and a realm-less
    entry names the principal in every realm."""
    folded = principal.casefold()
    name = _without_realm(folded)
    for entry in denied:
        entry = entry.casefold()
        if entry == folded or ("@" not in entry and entry == name):
            return True
    return False


def parse_principals(text: str) -> frozenset[str]:
    """The principals in a list file's text (comments and blank lines dropped)."""
    names = set()
    for raw in text.splitlines():
        name = raw.split("#", 1)[0].strip()
        if name and len(name) <= MAX_PRINCIPAL_CHARS:
            names.add(name)
    return frozenset(names)


class PrincipalFile:
    """One list file, cached; :meth:`names` is cheap enough to call on every connection."""

    def __init__(
        self,
        path: str,
        *,
        check_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._interval = check_interval_s
        self._clock = clock
        self._checked_at: float | None = None
        self._signature: tuple[int, int, int] | None = None
        self._names: frozenset[str] | None = None
        self._error = ""

    def load(self) -> frozenset[str]:
        """Read the file now; raises :class:`ListUnreadable`. Used at startup to fail fast."""
        self._checked_at = None
        names = self.names()
        if names is None:
            raise ListUnreadable(self._error)
        return names

    def names(self) -> frozenset[str] | None:
        """The current list, or None when the file cannot be read (fail closed)."""
        now = self._clock()
        if self._checked_at is not None and now - self._checked_at < self._interval:
            return self._names
        self._checked_at = now
        try:
            st = os.stat(self.path)
            signature = (st.st_ino, st.st_size, st.st_mtime_ns)
            if signature == self._signature and self._names is not None:
                return self._names
            if st.st_size > MAX_LIST_BYTES:
                raise ListUnreadable(f"{self.path}: larger than {MAX_LIST_BYTES} bytes")
            with open(self.path, encoding="utf-8-sig") as fh:  # a BOM is not a name
                names = parse_principals(fh.read(MAX_LIST_BYTES + 1))
        except (OSError, UnicodeDecodeError, ListUnreadable) as exc:
            if self._names is not None or not self._error:
                log.error("principal_list_unreadable", path=self.path, reason=str(exc))
            self._error = f"{self.path}: {exc}"
            self._names, self._signature = None, None
            return None
        if names != self._names:
            without_realm = sorted(n for n in names if "@" not in n)[:5]
            log.info(
                "principal_list_loaded",
                path=self.path,
                count=len(names),
                without_realm=without_realm or None,
            )
        self._names, self._signature, self._error = names, signature, ""
        return names


@dataclass(frozen=True)
class PrincipalPolicy:
    """Allow list (if any) and deny list (if any); deny wins. With neither, every
    authenticated principal may compile (as distccd --auth without lists)."""

    allow: PrincipalFile | None = None
    deny: PrincipalFile | None = None

    def refusal(self, principal: str) -> str | None:
        """Why ``principal`` may not compile, or None when it may."""
        if is_anonymous(principal):
            return "anonymous principals may not compile"
        if self.deny is not None:
            denied = self.deny.names()
            if denied is None:
                return "deny list unreadable"
            if on_deny_list(principal, denied):
                return "principal on the deny list"
        if self.allow is not None:
            allowed = self.allow.names()
            if allowed is None:
                return "allow list unreadable"
            if principal not in allowed:
                return "principal not on the allow list"
        return None
