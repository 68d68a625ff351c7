"""The compiled plane's Python half of PROXY in (fastplane_proxy.ProxyIn): what it answers
C for each kind of header, and the addresses it substitutes afterwards, as the Python
plane's ProxiedConnection applies them."""

from __future__ import annotations

import ipaddress

from tunnel.config import ListenerConfig
from tunnel.config.model import Address
from tunnel.dataplane.fastplane_proxy import EOF_REASON, IP_LIMITED, ProxyIn, proxy_in_args
from tunnel.wire import proxy_protocol as pp

CLIENT = ("203.0.113.7", 5555)
SERVER = ("198.51.100.1", 443)
BALANCER = ("127.0.0.1", 40000)
HELLO = b"\x16\x03\x01\x00\x05hello"


def make(admit: bool = True) -> tuple[ProxyIn, list[tuple[int, int, tuple[str, int]]]]:
    asked: list[tuple[int, int, tuple[str, int]]] = []

    def admitted(lid: int, cid: int, peer: tuple[str, int]) -> str | None:
        asked.append((lid, cid, peer))
        return None if admit else IP_LIMITED  # or "rate limited": the reason is passed on

    return ProxyIn(admitted), asked


def test_one_segment_header_and_hello() -> None:
    """The answer counts the header's bytes only: C leaves the ClientHello on the socket."""
    proxy, asked = make()
    header = pp.encode_v2(CLIENT, SERVER, [(0xEA, b"vpc-1")])
    assert proxy.feed(0, 7, header + HELLO, BALANCER) == (len(header), None)
    assert asked == [(0, 7, CLIENT)]  # the per-IP limits count the header's client
    peer, local, tlvs = proxy.addresses(7, BALANCER, ("127.0.0.1", 8443))
    assert (peer, local, tlvs) == (CLIENT, SERVER, ((0xEA, b"vpc-1"),))
    assert proxy.forget(7, BALANCER) == CLIENT
    assert proxy.addresses(7, BALANCER, None) == (BALANCER, None, ())


def test_split_header_is_fed_as_it_comes() -> None:
    proxy, _ = make()
    header = pp.encode_v1(CLIENT, SERVER)
    for byte in header[:-1]:
        assert proxy.feed(0, 1, bytes((byte,)), BALANCER) is None  # C reads them all
    assert proxy.feed(0, 1, header[-1:] + HELLO, BALANCER) == (1, None)
    assert proxy.addresses(1, BALANCER, None)[0] == CLIENT


def test_errors_end_in_reason_texts() -> None:
    proxy, asked = make()
    assert proxy.feed(0, 1, b"GET / HTTP/1.1\r\n", BALANCER) == (
        "proxy header error: not a PROXY protocol header: starts with b'GET / HTTP/1'"
    )
    assert proxy.feed(0, 2, b"PROXY TCP4 1.2", BALANCER) is None
    assert proxy.feed(0, 2, b"", BALANCER) == EOF_REASON
    assert proxy.feed(0, 3, b"PROXY " + b"9" * 200, BALANCER) == (
        "proxy header error: v1 header longer than 107 bytes"
    )
    assert asked == []


def test_local_and_unknown_keep_the_socket_addresses() -> None:
    proxy, asked = make()
    local = pp.encode_v2(None, None, command="LOCAL")
    assert proxy.feed(0, 1, local, BALANCER) == (len(local), None)
    assert asked == []  # a health check is not counted
    unknown = b"PROXY UNKNOWN\r\n"
    assert proxy.feed(0, 2, unknown, BALANCER) == (len(unknown), None)
    assert asked == [(0, 2, BALANCER)]  # counted as the balancer, as the Python plane does
    assert proxy.forget(1, BALANCER) == BALANCER and proxy.forget(2, BALANCER) == BALANCER


def test_unix_source_is_the_peer_and_not_counted() -> None:
    proxy, asked = make()
    header = pp.encode_v2("/run/client.sock", "/run/lb.sock")
    assert proxy.feed(0, 1, header, BALANCER) == (len(header), None)
    assert asked == []
    assert proxy.addresses(1, BALANCER, ("127.0.0.1", 8443)) == (
        "/run/client.sock",
        ("127.0.0.1", 8443),
        (),
    )


def test_refused_client_is_answered_with_the_reason() -> None:
    proxy, _ = make(admit=False)
    header = pp.encode_v1(CLIENT, SERVER)
    assert proxy.feed(0, 1, header, BALANCER) == (len(header), IP_LIMITED)
    assert IP_LIMITED == "per-IP limit"


def test_what_c_is_given() -> None:
    cfg = ListenerConfig(
        name="web",
        accept=(Address("tcp", "127.0.0.1", 8443),),
        cert=("server.pem",),
        key=None,
        connect=(Address("tcp", "127.0.0.1", 8080),),
        proxy_from=(ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128")),
        proxy_timeout=2.5,
    )
    timeout, nets, untrusted, expired = proxy_in_args(cfg)
    assert timeout == 2.5
    assert nets == [(bytes([10, 0, 0, 0]), 8), (bytes(15) + b"\x01", 128)]
    assert (untrusted, expired) == ("proxy untrusted source", "proxy header timeout")
