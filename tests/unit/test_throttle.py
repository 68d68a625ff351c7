"""tunnel.observe.throttle: one line per key and interval, the rest counted."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from tunnel.observe.throttle import Throttle, held_back


def test_first_line_passes_then_held_back_then_passes_with_the_count() -> None:
    throttle = Throttle(interval=10.0)
    assert throttle.claim("a", 100.0) == 0
    assert throttle.claim("a", 101.0) is None
    assert throttle.claim("a", 109.9) is None
    assert throttle.claim("b", 105.0) == 0  # keys are independent
    assert throttle.claim("a", 110.0) == 2
    assert throttle.claim("a", 110.5) is None
    assert throttle.claim("a", 125.0) == 1


def test_the_oldest_keys_are_forgotten_beyond_the_cap() -> None:
    throttle = Throttle(interval=10.0, max_keys=2)
    throttle.claim("a", 0.0)
    throttle.claim("b", 0.0)
    throttle.claim("c", 0.0)  # forgets "a"
    assert throttle.claim("a", 1.0) == 0  # a new key again: written
    assert throttle.claim("c", 1.0) is None


@given(st.lists(st.tuples(st.sampled_from("abc"), st.floats(0, 5)), max_size=200))
def test_lines_written_per_key_and_interval_are_bounded(steps: list[tuple[str, float]]) -> None:
    """However many claims, a key is written at most once per interval, and every claim
    held back is counted in the key's next line written."""
    throttle = Throttle(interval=10.0, max_keys=8)
    now = 0.0
    written: dict[str, list[float]] = {}
    pending: dict[str, int] = {}
    for key, step in steps:
        now += step
        count = throttle.claim(key, now)
        if count is None:
            pending[key] = pending.get(key, 0) + 1
        else:
            assert count == pending.pop(key, 0)
            written.setdefault(key, []).append(now)
    for times in written.values():
        assert all(b - a >= 10.0 for a, b in itertools.pairwise(times))


def test_held_back_suffix() -> None:
    assert held_back(0) == ""
    assert held_back(3, 10.0) == " (3 more like this in the last 10 s)"
