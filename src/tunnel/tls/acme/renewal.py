"""When to order or renew a certificate, and how long to wait after a failure (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from tunnel.config.acme import RenewBefore

MIN_RETRY = 5.0
MAX_RETRY = 6 * 3600.0


@dataclass(frozen=True, slots=True)
class Validity:
    """A certificate's validity window, in epoch seconds."""

    not_before: float
    not_after: float


def renew_at(validity: Validity | None, policy: RenewBefore) -> float:
    """The epoch second at which to order: 0 (now) without a certificate."""
    if validity is None:
        return 0.0
    lifetime = max(0.0, validity.not_after - validity.not_before)
    margin = policy.margin(lifetime)
    if margin >= lifetime:
        # e.g. 30d before expiry of a 6-day certificate: renew with a third of it left.
        margin = lifetime / 3
    return validity.not_after - margin


def retry_delay(failures: int, retry_after: float | None = None) -> float:
    """Seconds to wait after the ``failures``-th failure in a row (1 for the first).

    Doubles from MIN_RETRY up to MAX_RETRY; a server's Retry-After is honoured when longer.
    """
    delay = min(MAX_RETRY, MIN_RETRY * 2.0 ** max(0, failures - 1))
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY))
    return delay


def next_wake(now: float, due: float, *, poll: float) -> float:
    """Seconds to sleep before looking again: until ``due``, but at most ``poll``."""
    return max(0.0, min(due - now, poll))
