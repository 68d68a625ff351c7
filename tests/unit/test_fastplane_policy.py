"""The compiled plane's per-connection policy decisions (fastplane_policy.Policy), no I/O."""

from __future__ import annotations

import contextlib
import ssl
from collections import Counter
from types import SimpleNamespace
from typing import Any, cast

from tunnel.dataplane.connection import ListenerRuntime
from tunnel.dataplane.fastplane_policy import (
    ALERT_DECODE_ERROR,
    ALERT_HANDSHAKE_FAILURE,
    Policy,
)
from tunnel.dataplane.hello import ALERT_DECODE_ERROR as PY_DECODE_ERROR
from tunnel.dataplane.hello import ALERT_HANDSHAKE_FAILURE as PY_HANDSHAKE_FAILURE
from tunnel.observe.reasons import CloseReason
from tunnel.wire.clienthello import parse_handshake_message
from tunnel.wire.ja4 import ja4


class FakeRates:
    """ListenerRates' interface: refuses every address in ``refused``."""

    def __init__(self, refused: set[str]) -> None:
        self.refused = refused
        self.given_back: list[int] = []

    def admit(self, peer: Any) -> int | None:
        return None if peer[0] in self.refused else 7

    def resumed(self, key: int) -> None:
        self.given_back.append(key)


class FakeCaps:
    """PerIPLimits' interface: at most one connection per address."""

    def __init__(self) -> None:
        self.open: Counter[str] = Counter()
        self.handshakes_ended: list[str] = []

    def admit(self, ip: str) -> bool:
        if self.open[ip]:
            return False
        self.open[ip] += 1
        return True

    def handshake_ended(self, ip: str) -> None:
        self.handshakes_ended.append(ip)

    def connection_ended(self, ip: str) -> None:
        self.open[ip] -= 1


def runtime(rates: Any = None, caps: Any = None, deny: frozenset[str] = frozenset()) -> Any:
    stats = SimpleNamespace(ip_refused=0, denied=Counter())
    return cast(
        ListenerRuntime, SimpleNamespace(rates=rates, per_ip=caps, stats=stats, deny_ja4=deny)
    )


def hello_message() -> bytes:
    outgoing = ssl.MemoryBIO()
    ctx = ssl.create_default_context()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()[5:]  # one record: the message without its record header


def test_the_alerts_are_the_python_planes() -> None:
    assert PY_HANDSHAKE_FAILURE[-1] == ALERT_HANDSHAKE_FAILURE
    assert PY_DECODE_ERROR[-1] == ALERT_DECODE_ERROR


def test_rates_first_then_caps_and_a_resumed_handshake_gives_its_token_back() -> None:
    rates, caps = FakeRates({"10.0.0.9"}), FakeCaps()
    rt = runtime(rates, caps)
    policy = Policy()
    assert policy.accept(rt, 1, ("10.0.0.9", 1000)) is CloseReason.RATE_LIMITED  # caps untouched
    assert caps.open["10.0.0.9"] == 0
    assert policy.accept(rt, 2, ("10.0.0.1", 1000)) is None
    assert policy.accept(rt, 3, ("10.0.0.1", 1001)) is CloseReason.IP_LIMITED  # over the cap
    assert rt.stats.ip_refused == 1
    policy.handshake_done(rt, 2, resumed=True)
    assert rates.given_back == [7] and caps.handshakes_ended == ["10.0.0.1"]
    policy.closed(rt, 2)
    assert caps.open["10.0.0.1"] == 0 and caps.handshakes_ended == ["10.0.0.1"]


def test_a_full_handshake_keeps_its_token_and_an_unfinished_one_ends_at_close() -> None:
    rates, caps = FakeRates(set()), FakeCaps()
    rt = runtime(rates, caps)
    policy = Policy()
    assert policy.accept(rt, 1, ("10.0.0.1", 1000)) is None
    policy.handshake_done(rt, 1, resumed=False)
    assert rates.given_back == []
    assert policy.accept(rt, 2, ("10.0.0.2", 1000)) is None
    policy.closed(rt, 2)  # closed during the handshake
    assert caps.handshakes_ended == ["10.0.0.1", "10.0.0.2"]


def test_a_peer_without_an_ip_is_not_counted() -> None:
    caps = FakeCaps()
    assert Policy().accept(runtime(None, caps), 1, None) is None
    assert not caps.open


def test_deny_ja4_refuses_a_listed_fingerprint_only() -> None:
    message = hello_message()
    fingerprint = ja4(parse_handshake_message(message))
    policy = Policy()
    rt = runtime(deny=frozenset({fingerprint}))
    assert policy.hello(rt, 1, message, 0) == (
        ALERT_HANDSHAKE_FAILURE,
        f"denied: ja4 {fingerprint}",
    )
    assert rt.stats.denied == {"ja4": 1}
    assert policy.hello(runtime(deny=frozenset({"t00i0000_x_y"})), 2, message, 0) is None
    assert not policy.bad_hello
    # Kept for the connection's PROXY TLV or log line, which do not parse the hello again.
    assert policy.fingerprints == {2: fingerprint}


def test_a_hello_the_reader_refuses_is_a_bad_client_hello() -> None:
    policy = Policy()
    rt = runtime(deny=frozenset({"t00i0000_x_y"}))
    alert, reason = policy.hello(rt, 1, None, 17004)  # too large for C to keep
    assert (alert, reason) == (
        ALERT_DECODE_ERROR,
        "handshake failed: bad ClientHello: ClientHello of 17000 bytes: more than 16384",
    )
    alert, reason = policy.hello(rt, 2, b"\x01\x00\x00\x02\x03\x03", 0)
    assert alert == ALERT_DECODE_ERROR and reason.startswith("handshake failed: bad ClientHello: ")
    assert policy.bad_hello == {1, 2}


def test_first_bytes_get_the_readers_verdict() -> None:
    policy = Policy()
    rt = runtime(deny=frozenset({"t00i0000_x_y"}))
    assert policy.first_bytes(rt, 1, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc") is None
    assert policy.first_bytes(rt, 2, b"GET / HTT") == (
        ALERT_DECODE_ERROR,
        "handshake failed: bad ClientHello: first byte 0x47 is not a TLS handshake record",
    )
    assert policy.bad_hello == {2}
