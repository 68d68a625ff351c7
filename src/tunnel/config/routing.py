"""Pure routing tables: server name (SNI) and ALPN -> certificate group or backend.

No I/O here. A :class:`NameTable` answers "which value serves this host name" with one
or two dict look-ups: an exact match wins, then a wildcard (``*.example.com`` matches
exactly one extra label: ``a.example.com`` but neither ``example.com`` nor
``a.b.example.com``), else ``None`` so the caller falls back to its default.

A :class:`RouteTable` picks a backend after the handshake: SNI routes first (exact, then
wildcard), then the negotiated ALPN protocol, then the default. Route rules are written
``sni:NAME=BACKEND`` or ``alpn:PROTOCOL=BACKEND``, comma separated (see
:func:`parse_routes`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

T = TypeVar("T")

_LABEL_RE = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?", re.ASCII)


class RouteError(ValueError):
    """A bad route rule or host name; ``hint`` says what is expected instead."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message} ({hint})" if hint else message)


def normalize_name(name: str) -> str:
    """Lower-case a host name and drop one trailing dot (DNS names are case-insensitive)."""
    return name.lower().removesuffix(".")


def check_pattern(pattern: str) -> str:
    """Validate and normalise an exact or ``*.`` wildcard host name; raise RouteError."""
    name = normalize_name(pattern.strip())
    labels = name.removeprefix("*.").split(".")
    if len(name) > 253 or not all(_LABEL_RE.fullmatch(label) for label in labels):
        raise RouteError(
            f"{pattern!r} is not a host name",
            "use a DNS name such as api.example.com or *.example.com",
        )
    return name


@dataclass(slots=True)
class NameTable(Generic[T]):
    """Exact names and one-label wildcards (keyed by their parent domain) -> values."""

    exact: dict[str, T] = field(default_factory=dict)
    wildcard: dict[str, T] = field(default_factory=dict)

    def add(self, pattern: str, value: T) -> bool:
        """Add a normalised name or ``*.parent``; the first value added for it wins.

        Returns False when the name already had a value (the caller may warn).
        """
        if pattern.startswith("*."):
            table, key = self.wildcard, pattern[2:]
        else:
            table, key = self.exact, pattern
        if key in table:
            return False
        table[key] = value
        return True

    def lookup(self, name: str) -> T | None:
        """The value for ``name``: exact match, else wildcard on its parent, else None."""
        name = normalize_name(name)
        value = self.exact.get(name)
        if value is not None:
            return value
        first, dot, parent = name.partition(".")
        if not first or not dot:
            return None
        return self.wildcard.get(parent)

    def __len__(self) -> int:
        return len(self.exact) + len(self.wildcard)


def build_name_table(entries: Iterable[tuple[Iterable[str], T]]) -> NameTable[T]:
    """A table from ``(names, value)`` pairs; earlier entries win for a shared name.

    Names that are not valid DNS names or wildcards (e.g. IP addresses) are skipped.
    """
    table: NameTable[T] = NameTable()
    for names, value in entries:
        for name in names:
            try:
                table.add(check_pattern(name), value)
            except RouteError:
                continue
    return table


RouteKind = Literal["sni", "alpn"]


@dataclass(frozen=True, slots=True)
class Route:
    """One rule: connections whose SNI (or ALPN) is ``match`` go to backend ``target``."""

    kind: RouteKind
    match: str
    target: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.match}={self.target}"


_RULE_HINT = "write e.g. sni:api.example.com=api, sni:*.example.com=web, alpn:h2=grpc"


def parse_routes(text: str) -> tuple[Route, ...]:
    """Parse ``sni:NAME=BACKEND, alpn:PROTO=BACKEND, ...``; raise RouteError on bad input."""
    routes: list[Route] = []
    seen: set[tuple[str, str]] = set()
    for raw in re.split(r"[,\n]", text):
        rule = raw.strip()
        if not rule:
            continue
        kind, colon, rest = rule.partition(":")
        match, equals, target = rest.rpartition("=")
        kind = kind.strip().lower()
        match, target = match.strip(), target.strip()
        if not colon or not equals or not match or not target or kind not in ("sni", "alpn"):
            raise RouteError(f"{rule!r} is not a route rule", _RULE_HINT)
        if kind == "sni":
            match = check_pattern(match)
        elif not match.isascii() or len(match) > 255:
            raise RouteError(f"{match!r} is not an ALPN protocol name", "use e.g. h2, http/1.1")
        if (kind, match) in seen:
            raise RouteError(f"{kind}:{match} is routed twice", "keep one rule per name")
        seen.add((kind, match))
        routes.append(Route(kind, match, target))  # type: ignore[arg-type]
    return tuple(routes)


@dataclass(slots=True)
class RouteTable(Generic[T]):
    """Backend choice after the handshake: SNI routes, then ALPN routes, then default."""

    default: T
    sni: NameTable[T] = field(default_factory=NameTable)
    alpn: dict[str, T] = field(default_factory=dict)

    def choose(self, sni: str | None, alpn: str | None) -> T:
        """The backend for a connection with this SNI and negotiated ALPN protocol."""
        names = self.sni
        if sni and (names.exact or names.wildcard):  # not len(names): a Python call
            value = names.lookup(sni)
            if value is not None:
                return value
        if alpn and self.alpn:
            value = self.alpn.get(alpn)
            if value is not None:
                return value
        return self.default


def build_route_table(routes: Iterable[Route], targets: dict[str, T], default: T) -> RouteTable[T]:
    """Resolve route rules against ``targets`` (backend name -> value); KeyError if unknown."""
    table = RouteTable(default)
    for route in routes:
        value = targets[route.target]
        if route.kind == "sni":
            table.sni.add(route.match, value)
        else:
            table.alpn[route.match] = value
    return table
