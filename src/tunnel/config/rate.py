"""Rate values: ``20/s burst 40`` -> :class:`~tunnel.config.model.Rate` (pure).

A rate is a token bucket: ``per_second`` tokens are added each second up to ``burst``, and
each event takes one. Written ``N/s``, ``N/m`` or ``N/h``, optionally followed by
``burst B`` (default: one second's worth, at least 1); ``off`` (or 0) disables it.
"""

from __future__ import annotations

import math
import re

from tunnel.config.model import ConfigValueError, Rate

_MAX_DIGITS = 18
_RATE_RE = re.compile(
    r"(\d+(?:\.\d*)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)(?:\s+burst\s+(\d+))?",
    re.IGNORECASE | re.ASCII,
)
_RATE_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE_HINT = "use e.g. 20/s burst 40, 300/m, or off"
MAX_RATE = 1_000_000.0


def rate(text: str) -> Rate | None:
    """Parse ``20/s burst 40``, ``300/m`` or ``off``; the burst defaults to one second's
    worth (at least 1)."""
    value = text.strip()
    if value.lower() in ("off", "0", "no"):
        return None
    match = _RATE_RE.fullmatch(value)
    if match is None or len(match.group(1)) > _MAX_DIGITS:
        raise ConfigValueError(f"{text!r} is not a rate", _RATE_HINT)
    per_second = float(match.group(1)) / _RATE_UNITS[match.group(2)[0].lower()]
    if not 0 < per_second <= MAX_RATE:
        raise ConfigValueError(f"{text!r} is out of range", "use more than 0, up to 1000000/s")
    burst_text = match.group(3)
    burst = int(burst_text) if burst_text else max(1, math.ceil(per_second))
    if not 1 <= burst <= MAX_RATE:
        raise ConfigValueError(f"{text!r}: burst {burst} is out of range", "use 1..1000000")
    return Rate(per_second, burst)
