"""At most one log line per key and interval: repeated warnings summarized, not repeated.

A fault that every connection meets (a backend whose certificate fails verification, say)
would otherwise write one WARNING per connection: under load, thousands of lines a
second. :class:`Throttle` lets the first line of each key through, counts the ones that
follow within ``interval`` seconds, and lets the next one through after that with the
count, so the log says how often it happened without repeating it. Pure: the caller
passes the time, and the number of keys remembered is capped.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

INTERVAL = 10.0  # seconds between two lines of the same key
MAX_KEYS = 1024  # keys remembered at most (the oldest are forgotten first)


class Throttle:
    """Which lines to write: :meth:`claim` for each one, with its key and the time."""

    def __init__(self, interval: float = INTERVAL, max_keys: int = MAX_KEYS) -> None:
        self.interval = interval
        self.max_keys = max_keys
        # key -> (time of the last line written, lines held back since)
        self._seen: OrderedDict[Hashable, tuple[float, int]] = OrderedDict()

    def claim(self, key: Hashable, now: float) -> int | None:
        """None: hold this line back (counted). Else write it: the number of lines of
        ``key`` held back since the last one written (0 for the first)."""
        last = self._seen.get(key)
        if last is not None and now - last[0] < self.interval:
            self._seen[key] = (last[0], last[1] + 1)
            return None
        self._seen[key] = (now, 0)
        self._seen.move_to_end(key)
        while len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)
        return last[1] if last is not None else 0


def held_back(count: int, interval: float = INTERVAL) -> str:
    """The suffix of a line written after ``count`` like it were held back."""
    if count <= 0:
        return ""
    return f" ({count} more like this in the last {interval:g} s)"
