"""The compiled plane's bookkeeping (pure): each connect attempt counted once, names as one;
the addresses for C, the JA4 when asked, the close reason's labels."""

from __future__ import annotations

import contextlib
import errno
import socket
import ssl
from typing import cast

import pytest

from tunnel.config import Address, BackendConfig
from tunnel.dataplane.connection import ListenerRuntime
from tunnel.dataplane.fastplane_facts import (
    AddressCache,
    Pending,
    close_labels,
    count_attempts,
    entry_ja4,
    recovering,
)
from tunnel.dataplane.pool import Member, Pool
from tunnel.dataplane.targets import Target
from tunnel.observe.metrics import BackendStats
from tunnel.observe.reasons import CloseReason, HandshakeFailure
from tunnel.wire.ja4 import message_ja4

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


def test_addresses_are_made_once_per_members_tried() -> None:
    a = Member(Address("tcp", host="10.0.0.1", port=1))
    b = Member(Address("tcp", host="::1", port=2))
    name = Member(Address("tcp", host="app.test", port=3))
    cache = AddressCache(limit=2)
    origins, addrs = cache.get((a, b))
    assert origins == (a.address, b.address)
    assert addrs == ((socket.AF_INET, "10.0.0.1", 1), (socket.AF_INET6, "::1", 2))
    assert cache.get((a, b)) is cache.get((a, b))  # the same answer, not made again
    assert cache.get((a, name)) == ((a.address, name.address), None)  # a name: resolved first
    assert cache.get(()) == ((), ())
    # Members are told apart by identity: a pool's refresh makes new ones, new answers.
    again = Member(Address("tcp", host="10.0.0.1", port=1))
    assert cache.get((again,)) == ((again.address,), ((socket.AF_INET, "10.0.0.1", 1),))


def test_the_ja4_is_computed_at_its_first_use_only() -> None:
    _, entry, _ = setup(Member(Address("tcp", host="10.0.0.1", port=1)))
    assert entry_ja4(entry) is None  # no ClientHello: none
    message = client_hello_message()
    entry.hello = message
    assert entry_ja4(entry) == message_ja4(message) and entry.ja4 is not None
    assert entry.hello is None  # computed once; the bytes are not kept
    assert entry_ja4(entry) == message_ja4(message)
    entry.ja4, entry.hello = None, b"\x01\x00\x00\x01x"  # one the reader refuses: no JA4
    assert entry_ja4(entry) is None


def client_hello_message() -> bytes:
    """A ClientHello handshake message as C hands it over (no record header)."""
    outgoing = ssl.MemoryBIO()
    obj = ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname="a")
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()[5:]


@pytest.mark.parametrize("reason", list(CloseReason))
def test_close_labels_of_each_reason(reason: CloseReason) -> None:
    kind, failure = close_labels(f"{reason.value}: some detail", False)
    assert kind is reason
    assert (failure is None) == (reason is not CloseReason.HANDSHAKE_FAILED)
    assert close_labels(reason.value, False)[0] is reason


def test_close_labels_of_failed_handshakes() -> None:
    failed = CloseReason.HANDSHAKE_FAILED
    assert close_labels("handshake failed: no shared cipher", False) == (
        failed,
        HandshakeFailure.NO_SHARED_CIPHER,
    )
    assert close_labels("handshake failed: unknown server name", False) == (
        failed,
        HandshakeFailure.UNKNOWN_SNI,
    )
    assert close_labels("handshake failed: x", True) == (failed, HandshakeFailure.BAD_CLIENT_CERT)
    assert close_labels("handshake failed: x", False, True) == (
        failed,
        HandshakeFailure.BAD_CLIENT_HELLO,
    )
    assert close_labels("handshake failed: x", False) == (failed, HandshakeFailure.OTHER)
    assert close_labels("internal error (see the traceback)", False) == (CloseReason.CLOSED, None)
