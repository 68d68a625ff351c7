"""Exception hierarchy: every error says whose fault it is and where.

A leaf module that every room may import except ``tunnel.wire`` and ``tunnel._native``,
which import nothing of Tunnel's (``wire`` raises its own ``ProxyProtocolError``, the
client's fault by construction).
"""

from __future__ import annotations


class TunnelError(Exception):
    """Base class of every error Tunnel raises on purpose."""


class ConfigError(TunnelError):
    """A problem in the configuration file, located by file, section and key.

    ``hint`` says what to do about it.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str = "",
        section: str | None = None,
        key: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.section = section
        self.key = key
        self.hint = hint
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = self.file or "<config>"
        if self.section is not None:
            where += f": [{self.section}]"
            if self.key is not None:
                where += f" {self.key}"
        text = f"{where}: {self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text


class ConfigErrors(TunnelError):
    """Several configuration problems, all reported at once."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


class TLSSetupError(ConfigError):
    """A certificate, key or TLS parameter could not be loaded or used."""
