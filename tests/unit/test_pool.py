"""Backend pools (pure): balancing, weights, SRV priorities, passive health; the syntax."""

from __future__ import annotations

from collections import Counter

import pytest

from tunnel.config import Address, ConfigValueError, parse_config
from tunnel.config.pool import pool_addresses, resolver_list
from tunnel.dataplane.pool import Member, Pool
from tunnel.dataplane.resolve import is_static
from tunnel.errors import ConfigErrors
from tunnel.observe import metrics


def tcp(port: int, weight: int = 1) -> Address:
    return Address("tcp", host="10.0.0.1", port=port, weight=weight)


def pool(balance: str, *weights: int, max_fails: int = 1) -> Pool:
    members = [Member(tcp(8000 + i, w), w) for i, w in enumerate(weights)]
    return Pool("p", balance, max_fails, 10.0, members)


def picks(p: Pool, n: int, now: float = 0.0) -> list[int]:
    return [p.candidates(now)[0].address.port - 8000 for _ in range(n)]


def test_first_keeps_the_order_and_lists_the_rest_for_failover() -> None:
    p = pool("first", 1, 1, 1)
    assert [m.address.port for m in p.candidates(0.0)] == [8000, 8001, 8002]
    assert picks(p, 3) == [0, 0, 0]


def test_round_robin_is_smooth_and_weighted() -> None:
    assert picks(pool("round-robin", 1, 1, 1), 6) == [0, 1, 2, 0, 1, 2]
    heavy = picks(pool("round-robin", 3, 1), 8)
    assert Counter(heavy) == {0: 6, 1: 2}
    assert heavy[:4] in ([0, 0, 1, 0], [0, 1, 0, 0])  # interleaved, not 0,0,0,1 bunched


def test_least_connections_by_weight() -> None:
    p = pool("least-connections", 1, 2)
    p.members[0].active = 1
    p.members[1].active = 1  # 1/2 per unit of weight: fewer
    assert picks(p, 1) == [1]
    p.members[1].active = 4
    assert picks(p, 1) == [0]


def test_passive_health_skips_for_the_backoff_then_tries_again() -> None:
    p = pool("first", 1, 1, max_fails=2)
    a = p.members[0]
    p.failed(a, 0.0, "refused")
    assert picks(p, 1, 0.0) == [0]  # one failure of two
    p.failed(a, 1.0, "refused")
    assert [m.address.port for m in p.candidates(1.0)] == [8001]  # skipped, not tried
    assert picks(p, 1, 10.9) == [1]
    assert picks(p, 1, 11.0) == [0]  # back-off over: tried again
    p.failed(a, 11.0, "refused")  # still failing: out again at once
    assert picks(p, 1, 11.0) == [1]
    p.succeeded(a)
    assert picks(p, 1, 11.0) == [0]


def test_everything_down_means_try_everything_in_order() -> None:
    p = pool("round-robin", 1, 1)
    for member in p.members:
        p.failed(member, 0.0, "refused")
    assert not p.any_up(0.0)
    assert [m.address.port for m in p.candidates(0.0)] == [8000, 8001]


def test_active_check_down_is_skipped() -> None:
    p = pool("first", 1, 1)
    p.members[0].check_down = True
    assert picks(p, 1) == [1]
    assert p.any_up(0.0)


def test_srv_priority_first_then_lower_priorities_as_failover() -> None:
    p = pool("round-robin", 1, 1, 1)
    p.members[0].priority = 20
    assert sorted(picks(p, 4)) == [1, 1, 2, 2]
    assert p.candidates(0.0)[-1].address.port == 8000  # the failover of last resort


def test_replace_keeps_the_state_of_addresses_that_stay() -> None:
    p = pool("first", 1, 1)
    p.failed(p.members[1], 0.0, "refused")
    p.replace([Member(tcp(8001), 1), Member(tcp(8005), 1)])
    assert [m.address.port for m in p.members] == [8001, 8005]
    assert p.members[0].down_until == 10.0


def test_connect_syntax() -> None:
    got = pool_addresses("10.0.0.1:80 weight=3, [::1]:81, srv:_app._tcp.example.com, unix:/s")
    assert got == (
        Address("tcp", host="10.0.0.1", port=80, weight=3),
        Address("tcp", host="::1", port=81),
        Address("srv", host="_app._tcp.example.com"),
        Address("unix", path="/s"),
    )
    assert str(got[2]) == "srv:_app._tcp.example.com"


@pytest.mark.parametrize(
    "text",
    ["weight=2 10.0.0.1:80", "10.0.0.1:80 weight=0", "srv:x weight=2", "srv:", "a:1, a:1 weight=2"],
)
def test_bad_connect_lists(text: str) -> None:
    with pytest.raises(ConfigValueError):
        pool_addresses(text)


def test_resolvers_syntax() -> None:
    assert resolver_list("127.0.0.1:5353, ::1") == (
        Address("tcp", host="127.0.0.1", port=5353),
        Address("tcp", host="::1", port=53),
    )
    with pytest.raises(ConfigValueError):
        resolver_list("dns.example.com:53")


def test_static_addresses_are_never_looked_up() -> None:
    assert is_static(Address("tcp", host="127.0.0.1", port=1))
    assert is_static(Address("tcp", host="localhost", port=1))
    assert is_static(Address("unix", path="/s"))
    assert not is_static(Address("tcp", host="db.example.com", port=1))
    assert not is_static(Address("srv", host="_a._tcp.example.com"))


LISTENER = "[web]\naccept = 127.0.0.1:8443\ncert = /c/web.pem\nbackend = api\n"


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("balance = random", ("balance", "least-connections")),
        ("health_check = http", ("health_check", "tcp")),
        ("connect = 10.0.0.1:80 weight=5000", ("connect", "weight=1..1000")),
        ("max_fails = -1", ("max_fails",)),
    ],
)
def test_check_names_the_key_and_what_to_write(line: str, words: tuple[str, ...]) -> None:
    connect = "" if line.startswith("connect") else "connect = 10.0.0.1:80\n"
    with pytest.raises(ConfigErrors) as info:
        parse_config(f"{LISTENER}[backend:api]\n{connect}{line}\n", "/t.ini")
    message = str(info.value)
    assert "[backend:api]" in message
    for word in words:
        assert word in message, message


def test_pool_keys_parse() -> None:
    text = (
        "[tunnel]\nresolvers = 127.0.0.1:5353\n" + LISTENER + "[backend:api]\n"
        "connect = a.example:80 weight=2, srv:_api._tcp.example\nbalance = round-robin\n"
        "max_fails = 3\nfail_backoff = 30s\nhealth_check = tls\nhealth_interval = 2s\n"
    )
    config = parse_config(text, "/t.ini")
    (api,) = config.backends
    assert config.tunnel.resolvers == (Address("tcp", host="127.0.0.1", port=5353),)
    assert api.connect[0].weight == 2 and api.connect[1].kind == "srv"
    assert (api.balance, api.max_fails, api.fail_backoff) == ("round-robin", 3, 30.0)
    assert (api.health_check, api.health_interval) == ("tls", 2.0)


def test_metrics_merge_pool_health_and_retire_drops_it() -> None:
    one = {"listeners": {"web": {"backend_up": 1}}, "pools": {"api": {"10.0.0.1:80": [1, 2]}}}
    two = {"listeners": {"web": {"backend_up": 0}}, "pools": {"api": {"10.0.0.1:80": [0, 1]}}}
    merged = metrics.merge([one, two])
    text = metrics.render(merged, metrics.SupervisorFacts()).decode()
    assert 'tunnel_backend_up{address="10.0.0.1:80",pool="api"} 1.0' in text
    assert 'tunnel_backend_up_workers{address="10.0.0.1:80",pool="api"} 1.0' in text
    assert 'tunnel_backend_active_connections{address="10.0.0.1:80",pool="api"} 3.0' in text
    assert 'tunnel_listener_backends_up{listener="web"} 1.0' in text
    retired = metrics.retire(one)
    assert retired["pools"] == {} and "backend_up" not in retired["listeners"]["web"]
