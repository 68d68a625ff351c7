"""Unit tests for the daemon report, systemd environment handling and privilege checks."""

from __future__ import annotations

import os
import socket

import pytest

from tunnel.config import Config, parse_config
from tunnel.errors import ConfigError
from tunnel.process import privileges
from tunnel.process.daemon import parse_report
from tunnel.process.sd_notify import listen_fds, notify

LISTENER = "[web]\naccept = 127.0.0.1:8443\ncert = a.pem\nconnect = 127.0.0.1:8080\n"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"ok 4321", (0, "4321")),
        (b"ok ", (1, "the daemon exited during start-up (see its log)")),
        (b"fail 2 /t.ini: [web] cert: bad", (2, "/t.ini: [web] cert: bad")),
        (b"fail 1 two\nlines", (1, "two\nlines")),
        (b"", (1, "the daemon exited during start-up (see its log)")),
        (b"fail x y", (1, "the daemon exited during start-up (see its log)")),
    ],
)
def test_parse_report(data: bytes, expected: tuple[int, str]) -> None:
    assert parse_report(data) == expected


def test_listen_fds_ignores_another_pids_sockets() -> None:
    env = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b"}
    assert listen_fds(env) == []
    assert env == {}  # removed, so that workers never see them


@pytest.mark.parametrize("env", [{}, {"LISTEN_PID": "x", "LISTEN_FDS": "1"}])
def test_listen_fds_without_activation(env: dict[str, str]) -> None:
    assert listen_fds(env) == []


def test_notify_without_socket_does_nothing() -> None:
    assert notify("READY=1", {}) is False
    assert notify("READY=1", {"NOTIFY_SOCKET": "relative"}) is False


def test_notify_to_missing_socket_is_not_an_error(tmp_path: object) -> None:
    assert notify("READY=1", {"NOTIFY_SOCKET": "/nonexistent/notify.sock"}) is False


def test_notify_sends_datagram_to_abstract_socket() -> None:
    name = f"tunnel-unit-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        assert notify("READY=1\nSTATUS=ok", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(100) == b"READY=1\nSTATUS=ok"


def config(tunnel: str) -> Config:
    return parse_config(f"[tunnel]\n{tunnel}\n{LISTENER}", "/t.ini")


def test_resolve_nothing_to_do() -> None:
    assert privileges.resolve(config("")) is None


def test_resolve_user_and_group() -> None:
    identity = privileges.resolve(config("user = root\ngroup = root"))
    assert identity == privileges.Identity("root", 0, 0)


@pytest.mark.parametrize("key", ["user", "group"])
def test_resolve_unknown_names(key: str) -> None:
    with pytest.raises(ConfigError) as info:
        privileges.resolve(config(f"{key} = no-such-name-x"))
    assert str(info.value).startswith(f"/t.ini: [tunnel] {key}: no such {key} 'no-such-name-x'")


def test_check_root() -> None:
    as_root = privileges.Identity("root", 0, 0)
    with pytest.raises(ConfigError, match="refusing to serve as root"):
        privileges.check_root(config(""), as_root)
    privileges.check_root(config("allow_root = yes"), as_root)
    privileges.check_root(config(""), privileges.Identity("x", 1000, 1000))
