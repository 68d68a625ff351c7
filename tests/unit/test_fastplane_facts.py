"""The compiled plane's connect reports (pure): each attempt counted once, names as one."""

from __future__ import annotations

import errno
from typing import cast

from tunnel.config import Address, BackendConfig
from tunnel.dataplane.connection import ListenerRuntime
from tunnel.dataplane.fastplane_facts import Pending, count_attempts, recovering
from tunnel.dataplane.pool import Member, Pool
from tunnel.dataplane.targets import Target
from tunnel.observe.metrics import BackendStats

REFUSED = errno.ECONNREFUSED


class Runtime:
    """What count_attempts uses of a ListenerRuntime: the per-address statistics."""

    def __init__(self) -> None:
        self.counters: dict[str, BackendStats] = {}

    def backend_stats(self, addr: Address) -> BackendStats:
        return self.counters.setdefault(str(addr), BackendStats())


def setup(*members: Member, repeat: tuple[int, ...] = ()) -> tuple[Runtime, Pending, Pool]:
    """A pool of ``members``; the connection tries each once, or ``repeat[i]`` times (the
    addresses a host name resolved to)."""
    pool = Pool("p", "first", 1, 10.0, list(members))
    tried = [m for i, m in enumerate(members) for _ in range(repeat[i] if repeat else 1)]
    target = Target(BackendConfig("p", tuple(m.address for m in members)), None, pool)
    entry = Pending(target, None, tuple(m.address for m in tried), tuple(tried))
    return Runtime(), entry, pool


def count(runtime: Runtime, entry: Pending, attempts: list[tuple[int, int, float]]) -> None:
    count_attempts(cast(ListenerRuntime, runtime), entry, attempts)


def test_each_report_counts_only_the_attempts_not_seen_yet() -> None:
    a = Member(Address("tcp", host="10.0.0.1", port=1))
    b = Member(Address("tcp", host="10.0.0.2", port=1))
    runtime, entry, pool = setup(a, b)
    attempts = [(0, REFUSED, 0.001)]
    count(runtime, entry, attempts)  # the failure, reported at once
    assert a.fails == 1 and a.down_until > 0
    assert entry.failures == ["10.0.0.1:1: Connection refused"]
    attempts.append((1, 0, 0.002))
    count(runtime, entry, attempts)  # the success, with the next call: a not counted again
    count(runtime, entry, attempts)  # and again at the close: nothing more
    assert a.fails == 1 and b.active == 1 and entry.member is b
    assert runtime.counters["10.0.0.1:1"].failures["refused"] == 1
    assert runtime.counters["10.0.0.2:1"].connects == 1
    assert len(entry.failures) == 1
    assert not recovering((b,)) and recovering((a, b))
    assert pool.candidates(0.0) == [b]


def test_the_addresses_of_a_name_are_one_attempt() -> None:
    name = Member(Address("tcp", host="app.test", port=1))
    other = Member(Address("tcp", host="10.0.0.2", port=1))
    runtime, entry, _ = setup(name, other, repeat=(2, 1))
    count(runtime, entry, [(0, REFUSED, 0.001), (1, 0, 0.002)])  # ::1 refused, then v4
    assert name.fails == 0 and name.down_until == 0.0 and entry.member is name
    stats = runtime.counters["app.test:1"]
    assert stats.connects == 1 and not stats.failures and entry.failures == []
    runtime, entry, _ = setup(name, other, repeat=(2, 1))
    count(runtime, entry, [(0, REFUSED, 0.001)])  # the first address: not a failure yet
    assert name.fails == 0
    count(runtime, entry, [(0, REFUSED, 0.001), (1, -1, 1.0)])  # the last: one failure
    assert name.fails == 1
    assert entry.failures == ["app.test:1: connect timed out"]
    assert runtime.counters["app.test:1"].failures == {"timeout": 1}
