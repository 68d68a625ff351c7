"""Unit tests for tunnel.routing: SNI name tables, route rules, backend choice."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunnel.config.routing import (
    NameTable,
    Route,
    RouteError,
    build_name_table,
    build_route_table,
    check_pattern,
    parse_routes,
)

LABEL = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
NAME = st.lists(LABEL, min_size=1, max_size=4).map(".".join)


def table() -> NameTable[str]:
    return build_name_table(
        [
            (("localhost",), "default"),
            (("*.example.com",), "wild"),
            (("api.example.com", "API2.example.com."), "api"),
            (("api.example.com",), "shadowed"),
        ]
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("api.example.com", "api"),
        ("API.EXAMPLE.COM.", "api"),
        ("api2.example.com", "api"),
        ("www.example.com", "wild"),
        ("a.b.example.com", None),
        ("example.com", None),
        (".example.com", None),
        ("localhost", "default"),
        ("", None),
    ],
)
def test_lookup(name: str, expected: str | None) -> None:
    assert table().lookup(name) == expected


def test_first_value_wins() -> None:
    t: NameTable[int] = NameTable()
    assert t.add("a.test", 1)
    assert not t.add("a.test", 2)
    assert t.lookup("a.test") == 1
    assert len(t) == 1


@given(NAME, LABEL)
def test_exact_beats_wildcard(parent: str, label: str) -> None:
    name = f"{label}.{parent}"
    t = build_name_table([((f"*.{parent}",), "wild"), ((name,), "exact")])
    assert t.lookup(name) == "exact"
    assert t.lookup(f"other-{label}.{parent}") == "wild"
    assert t.lookup(f"x.{name}") is None  # one label only
    assert t.lookup(parent) is None


@given(st.lists(NAME, min_size=1, max_size=8), NAME)
def test_lookup_matches_a_naive_model(names: list[str], probe: str) -> None:
    t = build_name_table([((n,), n) for n in names])
    expected = probe if probe in names else None
    assert t.lookup(probe) == expected
    assert t.lookup(probe.upper()) == expected


@given(st.text(max_size=40))
def test_lookup_never_raises(name: str) -> None:
    table().lookup(name)


@pytest.mark.parametrize("bad", ["", "*", "a..b", "*.*.example.com", "ex ample.com", "-a.com"])
def test_check_pattern_rejects(bad: str) -> None:
    with pytest.raises(RouteError):
        check_pattern(bad)


def test_parse_routes() -> None:
    routes = parse_routes("sni:API.example.com=api, sni:*.example.com=web,\nalpn:h2=grpc")
    assert routes == (
        Route("sni", "api.example.com", "api"),
        Route("sni", "*.example.com", "web"),
        Route("alpn", "h2", "grpc"),
    )
    assert str(routes[2]) == "alpn:h2=grpc"


@pytest.mark.parametrize(
    "bad",
    ["api.example.com=api", "sni:=api", "sni:a.com=", "host:a.com=x", "sni:a b=x", "sni:a.com"],
)
def test_parse_routes_rejects(bad: str) -> None:
    with pytest.raises(RouteError) as info:
        parse_routes(bad)
    assert info.value.hint


def test_parse_routes_rejects_duplicates() -> None:
    with pytest.raises(RouteError, match="twice"):
        parse_routes("sni:a.com=x, sni:A.com=y")


@given(st.text(max_size=60))
def test_parse_routes_only_raises_route_error(text: str) -> None:
    with contextlib.suppress(RouteError):
        parse_routes(text)


def test_route_table_precedence() -> None:
    routes = parse_routes("sni:api.example.com=api, sni:*.example.com=web, alpn:h2=grpc")
    targets = {"api": "API", "web": "WEB", "grpc": "GRPC"}
    t = build_route_table(routes, targets, "DEFAULT")
    assert t.choose("api.example.com", "h2") == "API"
    assert t.choose("www.example.com", None) == "WEB"
    assert t.choose("other.test", "h2") == "GRPC"
    assert t.choose(None, "h2") == "GRPC"
    assert t.choose(None, "http/1.1") == "DEFAULT"
    assert t.choose(None, None) == "DEFAULT"
    with pytest.raises(KeyError):
        build_route_table(parse_routes("alpn:h2=missing"), targets, "DEFAULT")
