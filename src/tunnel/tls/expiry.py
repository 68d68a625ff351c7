"""When a certificate's expiry deserves a warning, and how the warning reads (pure).

``tunnel check`` (from the files) and ``tunnel status`` (from the running server's
metrics) warn with the same words and the same threshold.
"""

from __future__ import annotations

import datetime

EXPIRY_WARNING_DAYS = 30


def expiry_warning(
    listener: str, path: str, not_after: datetime.datetime, now: datetime.datetime
) -> str | None:
    """The warning for a certificate that expired or expires within the threshold, or None."""
    days = (not_after - now).total_seconds() / 86400
    if days >= EXPIRY_WARNING_DAYS:
        return None
    if days < 0:
        state = f"EXPIRED on {not_after:%Y-%m-%d}"
    else:
        state = f"expires in {days:.0f} days ({not_after:%Y-%m-%d})"
    return f"WARN [{listener}] cert {path}: {state}; renew it"
