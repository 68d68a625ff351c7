"""Per-IP rates: the token-bucket arithmetic (pure), the rate syntax, the shared table."""

from __future__ import annotations

import pytest

from tunnel.config import ConfigValueError, Rate
from tunnel.config.rate import rate
from tunnel.dataplane.rates import (
    GROUP_SLOTS,
    RateTable,
    Verdict,
    admit,
    bucket_key,
    refill,
    refund,
)

TEN = Rate(10.0, 20)
TWO = Rate(2.0, 2)


def test_refill_adds_the_rate_and_stops_at_the_burst() -> None:
    assert refill(0.0, 0.5, TEN) == 5.0
    assert refill(15.0, 10.0, TEN) == 20.0
    assert refill(3.0, -1.0, TEN) == 3.0  # a clock that went back adds nothing


def test_admit_takes_one_token_from_each_enabled_bucket() -> None:
    assert admit(20.0, 2.0, 0.0, TEN, TWO) == (Verdict.OK, 19.0, 1.0)
    assert admit(20.0, 7.0, 0.0, TEN, None) == (Verdict.OK, 19.0, 7.0)
    assert admit(5.0, 2.0, 0.0, None, TWO) == (Verdict.OK, 5.0, 1.0)


def test_a_refusal_takes_nothing() -> None:
    assert admit(0.5, 2.0, 0.0, TEN, TWO) == (Verdict.CONNECTION, 0.5, 2.0)
    assert admit(5.0, 0.0, 0.0, TEN, TWO) == (Verdict.HANDSHAKE, 5.0, 0.0)
    assert admit(0.5, 0.0, 0.5, TEN, TWO)[0] is Verdict.OK  # 0.5 s refilled 5 and 1


def test_a_burst_then_the_rate() -> None:
    conn, admitted = float(TEN.burst), 0
    for _ in range(100):  # 100 attempts at once: exactly the burst passes
        verdict, conn, _ = admit(conn, 0.0, 0.0, TEN, None)
        admitted += verdict is Verdict.OK
    assert admitted == 20
    for _ in range(30):  # then one attempt every 50 ms for 1.5 s: 10 per second
        verdict, conn, _ = admit(conn, 0.0, 0.05, TEN, None)
        admitted += verdict is Verdict.OK
    assert admitted == 20 + 15


def test_refund_gives_a_token_back_up_to_the_burst() -> None:
    assert refund(0.0, 0.0, TWO) == 1.0
    assert refund(1.5, 0.0, TWO) == 2.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20/s burst 40", Rate(20.0, 40)),
        ("20/s", Rate(20.0, 20)),
        ("300/m", Rate(5.0, 5)),
        ("1/h burst 10", Rate(1 / 3600, 10)),
        ("0.5/s", Rate(0.5, 1)),
        ("10 / second  BURST 3", Rate(10.0, 3)),
        ("off", None),
        ("0", None),
    ],
)
def test_rate_syntax(text: str, expected: Rate | None) -> None:
    assert rate(text) == expected


@pytest.mark.parametrize("text", ["20", "20/d", "20/s burst", "20/s burst 0", "0/s", "x/s"])
def test_bad_rates_say_what_to_write(text: str) -> None:
    with pytest.raises(ConfigValueError) as info:
        rate(text)
    assert info.value.hint


def test_table_admits_the_burst_then_refuses_and_keys_are_independent() -> None:
    table = RateTable(groups=4)
    try:
        key, other = bucket_key("web", "192.0.2.1"), bucket_key("web", "192.0.2.2")
        slow = Rate(1 / 3600, 3)
        verdicts = [table.check(key, slow, None) for _ in range(5)]
        assert verdicts == [Verdict.OK] * 3 + [Verdict.CONNECTION] * 2
        assert table.check(other, slow, None) is Verdict.OK
        assert table.check(bucket_key("api", "192.0.2.1"), slow, None) is Verdict.OK
    finally:
        table.close()


def test_table_refund_lets_a_resumed_handshake_not_count() -> None:
    table = RateTable(groups=1)
    try:
        key, slow = bucket_key("web", "192.0.2.1"), Rate(1 / 3600, 1)
        assert table.check(key, None, slow) is Verdict.OK
        assert table.check(key, None, slow) is Verdict.HANDSHAKE
        table.give_back(key, slow)
        assert table.check(key, None, slow) is Verdict.OK
    finally:
        table.close()


def test_table_memory_is_bounded_the_oldest_entry_goes() -> None:
    table = RateTable(groups=1)  # GROUP_SLOTS slots in all
    try:
        slow = Rate(1 / 3600, 1)
        first = bucket_key("web", "10.0.0.0")
        assert table.check(first, slow, None) is Verdict.OK
        assert table.check(first, slow, None) is Verdict.CONNECTION  # remembered
        for i in range(1, GROUP_SLOTS + 1):  # as many new addresses as slots
            assert table.check(bucket_key("web", f"10.0.0.{i}"), slow, None) is Verdict.OK
        # The first address was the oldest entry: evicted, so it starts with a full bucket.
        assert table.check(first, slow, None) is Verdict.OK
    finally:
        table.close()


def test_claim_once_per_interval() -> None:
    table = RateTable(groups=2)
    try:
        key = bucket_key("web", "\0report")
        assert table.claim(key, 60.0) == 0.0
        assert 59.0 < table.claim(key, 60.0) <= 60.0
        assert table.claim(key, 0.0) == 0.0
    finally:
        table.close()
