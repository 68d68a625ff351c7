"""Client fingerprint values of the configuration (``deny_ja4``). Pure."""

from __future__ import annotations

import re

from tunnel.config.model import ConfigValueError

# t13d1516h2_8daaf6152771_e5627efa2ab1: part a (10 characters), then two 12-digit hashes.
_JA4_RE = re.compile(r"[tqd][0-9a-z]{2}[di][0-9]{4}[0-9A-Za-z]{2}_[0-9a-f]{12}_[0-9a-f]{12}")
_JA4_HINT = "write JA4 fingerprints like t13d1516h2_8daaf6152771_e5627efa2ab1, comma separated"


def ja4_list(text: str) -> tuple[str, ...]:
    """JA4 fingerprints, separated by commas, spaces or new lines."""
    found = tuple(word for word in re.split(r"[,\s]+", text) if word)
    for word in found:
        if not _JA4_RE.fullmatch(word):
            raise ConfigValueError(f"{word!r} is not a JA4 fingerprint", _JA4_HINT)
    if not found:
        raise ConfigValueError("has no fingerprints", _JA4_HINT)
    return found
