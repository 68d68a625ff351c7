"""Whether the dropped-to user can read what a reload needs: the pure decision and the list."""

from __future__ import annotations

import pytest

from tunnel.config import parse_config
from tunnel.process.readable import (
    READ,
    SEARCH,
    Denial,
    Need,
    Node,
    Who,
    allowed,
    ancestors,
    describe,
    first_denial,
    fix,
    needs,
)

NOBODY = Who(uid=65534, gids=frozenset({65534}))
TUNNEL = Who(uid=900, gids=frozenset({900, 901}))  # 901: a supplementary group
ROOT_DIR = Node("/", 0, 0, 0o755, is_dir=True)


def node(path: str, mode: int, uid: int = 0, gid: int = 0, is_dir: bool = False) -> Node:
    return Node(path, uid, gid, mode, is_dir)


@pytest.mark.parametrize(
    ("mode", "uid", "gid", "who", "expected"),
    [
        (0o600, 0, 0, NOBODY, False),  # root's private key
        (0o644, 0, 0, NOBODY, True),  # world-readable
        (0o640, 0, 65534, NOBODY, True),  # readable through the primary group
        (0o640, 0, 901, TUNNEL, True),  # readable through a supplementary group
        (0o640, 0, 902, TUNNEL, False),  # a group the user is not in
        (0o604, 0, 900, TUNNEL, False),  # in the group: the group bits decide, not other's
        (0o044, 900, 900, TUNNEL, False),  # the owner: only the owner bits count
        (0o400, 900, 0, TUNNEL, True),
        (0o000, 5, 5, Who(0, frozenset({0})), True),  # root reads anything
    ],
)
def test_allowed_applies_one_class_of_bits(
    mode: int, uid: int, gid: int, who: Who, expected: bool
) -> None:
    assert allowed(node("/f", mode, uid, gid), who, READ) is expected


def test_acl_gets_the_benefit_of_the_doubt() -> None:
    assert allowed(Node("/f", 0, 0, 0o600, acl=True), NOBODY, READ)


def test_first_denial_names_the_directory_that_stops_the_user() -> None:
    private = node("/srv/tls", 0o700, is_dir=True)
    chain = [ROOT_DIR, node("/srv", 0o755, is_dir=True), private, node("/srv/tls/k", 0o644)]
    assert first_denial(chain, NOBODY, READ) == Denial(private, SEARCH, target=False)


def test_first_denial_names_the_file() -> None:
    key = node("/srv/k", 0o600)
    assert first_denial([ROOT_DIR, node("/srv", 0o755, is_dir=True), key], NOBODY, READ) == (
        Denial(key, READ)
    )


def test_first_denial_passes_readable_file_in_searchable_directories() -> None:
    chain = [ROOT_DIR, node("/srv", 0o711, is_dir=True), node("/srv/k", 0o644)]
    assert first_denial(chain, NOBODY, READ) is None


def test_listed_directory_needs_read_and_search() -> None:
    certs = node("/certs", 0o711, is_dir=True)  # passable, but not listable
    assert first_denial([ROOT_DIR, certs], NOBODY, READ | SEARCH) == Denial(certs, READ | SEARCH)
    assert first_denial([ROOT_DIR, node("/certs", 0o755, is_dir=True)], NOBODY, READ | SEARCH) is (
        None
    )


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/a/b/c.pem", ["/", "/a", "/a/b"]), ("/c.pem", ["/"]), ("/a/", ["/", "/a"])],
)
def test_ancestors(path: str, expected: list[str]) -> None:
    assert ancestors(path) == expected


@pytest.mark.parametrize(
    ("denial", "expected"),
    [
        (Denial(node("/k", 0o600), READ), "chgrp tunnel /k && chmod g+r /k"),
        (Denial(node("/k", 0o600, gid=901), READ), "chmod g+r /k"),
        (Denial(node("/k", 0o200, uid=900), READ), "chmod u+r /k"),
        (Denial(node("/d", 0o700, is_dir=True), SEARCH, False), "chgrp tunnel /d && chmod g+x /d"),
        (Denial(node("/d", 0o700, 0, 900, True), READ | SEARCH), "chmod g+rx /d"),
        (
            Denial(node("/my certs/k", 0o600), READ),
            "chgrp tunnel '/my certs/k' && chmod g+r '/my certs/k'",
        ),
    ],
)
def test_fix_changes_as_little_as_possible(denial: Denial, expected: str) -> None:
    assert fix(denial, TUNNEL, "tunnel") == expected


def test_describe_names_file_user_and_cause() -> None:
    need = Need("web", "key", "/srv/tls/k.pem")
    user = "user tunnel (group tunnel)"
    on_file = describe(need, Denial(node("/srv/tls/k.pem", 0o600), READ), user)
    assert on_file.startswith("/srv/tls/k.pem: it is not readable by user tunnel (group tunnel)")
    assert "a reload reads it again as that user" in on_file
    on_dir = describe(need, Denial(node("/srv/tls", 0o700, is_dir=True), SEARCH, False), user)
    assert "its directory /srv/tls is not searchable (x) by user tunnel" in on_dir


CONFIG = """\
[web]
accept = 127.0.0.1:8443
cert = /t/a.pem
key = /t/key.pem
cert_dir = /t/no-such-dir
client_ca = /t/ca.pem
verify = required
crl = /t/crl.pem
ticket_key_file = /t/tickets
connect = 127.0.0.1:8080

[backend:up]
connect = 127.0.0.1:9000
tls = yes
ca = /t/up-ca.pem
cert = /t/up.pem
key = /t/up-key.pem
keylog_file = /t/keylog
"""


def test_needs_lists_every_file_a_reload_reads() -> None:
    found = needs(parse_config(CONFIG, "/etc/tunnel.ini"))
    assert [(n.section, n.key, n.path) for n in found] == [
        (None, None, "/etc/tunnel.ini"),
        ("web", "cert", "/t/a.pem"),
        ("web", "key", "/t/key.pem"),
        ("web", "cert_dir", "/t/no-such-dir"),  # unlisted: the certificate checks say so
        ("web", "client_ca", "/t/ca.pem"),
        ("web", "crl", "/t/crl.pem"),
        ("web", "ticket_key_file", "/t/tickets"),
        ("backend:up", "ca", "/t/up-ca.pem"),
        ("backend:up", "cert", "/t/up.pem"),
        ("backend:up", "key", "/t/up-key.pem"),
    ]
    by_key = {n.key: n for n in found}
    assert by_key["cert_dir"].want == READ | SEARCH
    assert "every few seconds" in by_key["ticket_key_file"].when
