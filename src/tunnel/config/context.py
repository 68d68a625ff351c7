"""What parsing one file collects: its errors, where they are, and how paths resolve (pure)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from tunnel.config import values
from tunnel.config.model import Address, ConfigValueError
from tunnel.config.schema import Kind, PathKind
from tunnel.errors import ConfigError

TUNNEL_SECTION = "tunnel"
BACKEND_PREFIX = "backend:"
ACME_SECTION = "acme"


def kind_of(section: str) -> Kind:
    """The kind of a section by its name: [tunnel], [backend:NAME], else a listener."""
    if section == TUNNEL_SECTION:
        return "tunnel"
    if section == ACME_SECTION:
        return "acme"
    return "backend" if section.startswith(BACKEND_PREFIX) else "listener"


@dataclass(slots=True)
class Section:
    """One section as read: its raw ``items`` and the ``fields`` they converted to.

    ``fields`` holds the dataclass field values that converted cleanly, inherited defaults
    included, even when other keys of the section have errors, so that checks across
    sections still run and report everything at once.
    """

    name: str
    kind: Kind
    items: dict[str, str]
    fields: dict[str, Any]


@dataclass(slots=True)
class Context:
    """Collects errors while parsing one file and resolves relative paths."""

    file: str
    base_dir: str | None
    errors: list[ConfigError] = field(default_factory=list)
    failed: set[str] = field(default_factory=set)  # sections with at least one error
    # (section, key) named by a line that could not be parsed: not reported again as missing
    mentioned: set[tuple[str, str]] = field(default_factory=set)
    accept_owner: dict[Address, str] = field(default_factory=dict)

    def error(
        self, message: str, section: str | None = None, key: str | None = None, hint: str = ""
    ) -> None:
        """Record one problem, located by section and key."""
        if section is not None:
            self.failed.add(section)
        self.errors.append(
            ConfigError(message, file=self.file, section=section, key=key, hint=hint or None)
        )

    def value_error(self, exc: ConfigValueError, section: str, key: str) -> None:
        """Record a converter's problem(s) with a key's value."""
        for problem in getattr(exc, "problems", [exc]):
            self.error(problem.message, section, key, problem.hint or "")

    def resolve(self, path: str) -> str:
        """``~`` expanded, then relative to the config file's directory (string work only)."""
        path = os.path.expanduser(path)
        if self.base_dir is None or os.path.isabs(path):
            return path
        return os.path.normpath(os.path.join(self.base_dir, path))

    def resolve_value(self, value: Any, kind: PathKind) -> Any:
        """Resolve the path(s) in a converted value; ConfigValueError if one cannot be used."""
        if isinstance(value, tuple):
            return tuple(self.resolve_value(item, kind) for item in value)
        if isinstance(value, str):
            return self.resolve(value)
        if isinstance(value, Address) and value.kind == "unix":
            address = Address("unix", path=self.resolve(value.path), weight=value.weight)
            values.check_unix_path(address.path)
            return address
        return value

    def claim(self, address: Address, section: str) -> None:
        """Register an accept address; report it if another listener already has it."""
        owner = self.accept_owner.setdefault(address, section)
        if owner != section:
            self.error(
                f"{address} is already accepted by [{owner}]",
                section,
                "accept",
                "each address can be used by one listener only",
            )


def default_base_dir(path: str) -> str | None:
    """The directory relative paths resolve against: none for a ``<name>`` pseudo path."""
    if path.startswith("<") and path.endswith(">"):
        return None
    return os.path.dirname(path)
