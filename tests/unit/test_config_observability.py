"""Config keys of PROXY in/out and observability: values, defaults, errors."""

from __future__ import annotations

import ipaddress

import pytest

from tunnel.config import Address, parse_config
from tunnel.errors import ConfigErrors

FILE = "/etc/tunnel/obs.ini"
LISTENER = """\
[web]
accept = 127.0.0.1:8443
cert = /certs/web.pem
connect = 127.0.0.1:8080
"""


def error_of(text: str) -> str:
    with pytest.raises(ConfigErrors) as info:
        parse_config(text, FILE)
    (error,) = info.value.errors
    assert error.hint
    return str(error)


def test_defaults() -> None:
    config = parse_config(LISTENER, FILE)
    web = config.listeners[0]
    assert (web.proxy_crc32c, web.proxy_unique_id, web.proxy_cert_tlv) == (False, False, 0)
    assert (web.proxy_keep_tlvs, web.proxy_from, web.proxy_timeout) == (False, (), 5.0)
    assert config.tunnel.admin is None
    assert config.tunnel.log_format == "text"


def test_values() -> None:
    text = (
        "[tunnel]\nadmin = 127.0.0.1:9090\nlog_format = JSON\nproxy_crc32c = yes\n"
        + LISTENER
        + "proxy_unique_id = true\nproxy_cert_tlv = 0xE3\nproxy_keep_tlvs = on\n"
        + "proxy_from = 10.0.0.0/8, 127.0.0.1/32\n  ::1/128\nproxy_timeout = 2s\n"
    )
    config = parse_config(text, FILE)
    web = config.listeners[0]
    assert web.proxy_crc32c and web.proxy_unique_id and web.proxy_keep_tlvs
    assert web.proxy_cert_tlv == 0xE3
    assert web.proxy_from == tuple(
        ipaddress.ip_network(n) for n in ("10.0.0.0/8", "127.0.0.1/32", "::1/128")
    )
    assert web.proxy_timeout == 2.0
    assert config.tunnel.admin == Address("tcp", host="127.0.0.1", port=9090)
    assert config.tunnel.log_format == "json"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("proxy_crc32c = maybe", "use yes or no"),
        ("proxy_cert_tlv = 0x20", "0xE0..0xEF"),
        ("proxy_cert_tlv = cert", "0xE0..0xEF"),
        ("proxy_from = 10.0.0.1/8", "host bits zero"),
        ("proxy_from = example.com", "not a network"),
        ("proxy_timeout = 0", "greater than zero"),
    ],
)
def test_bad_listener_values(line: str, expected: str) -> None:
    message = error_of(LISTENER + line + "\n")
    assert "[web]" in message and line.split()[0] in message
    assert expected in message


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("admin = unix:/run/admin.sock", "use host:port"),
        ("admin = localhost", "not an address"),
        ("log_format = yaml", "text, json"),
    ],
)
def test_bad_tunnel_values(line: str, expected: str) -> None:
    message = error_of("[tunnel]\n" + line + "\n" + LISTENER)
    assert "[tunnel]" in message and expected in message


def test_admin_is_not_a_listener_key() -> None:
    assert "belongs in [tunnel]" in error_of(LISTENER + "admin = 127.0.0.1:9090\n")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/dev/log", "/dev/log"),
        ("unix:/run/syslog.sock", "/run/syslog.sock"),
        ("/run/other.sock", "/run/other.sock"),
        ("udp:127.0.0.1:5514", ("127.0.0.1", 5514)),
        ("udp:[::1]:514", ("::1", 514)),
        ("udp:logs.example.net:514", ("logs.example.net", 514)),
    ],
)
def test_log_syslog_address(value: str, expected: object) -> None:
    text = f"[tunnel]\nlog_target = syslog\nlog_syslog_address = {value}\n" + LISTENER
    assert parse_config(text, FILE).tunnel.log_syslog_address == expected


def test_log_syslog_address_default() -> None:
    assert parse_config(LISTENER, FILE).tunnel.log_syslog_address == "/dev/log"


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("localhost:514", "is not a syslog address"),
        ("unix:", "is not a syslog address"),
        ("unix:relative.sock", "is not a syslog address"),
        ("udp:127.0.0.1", "is not an address"),
        ("udp:127.0.0.1:70000", "'udp:127.0.0.1:70000'"),
        ("udp:unix:/x", "is not a UDP address"),
        ("tcp:127.0.0.1:514", "is not a syslog address"),
    ],
)
def test_log_syslog_address_errors(value: str, fragment: str) -> None:
    text = f"[tunnel]\nlog_target = syslog\nlog_syslog_address = {value}\n" + LISTENER
    message = error_of(text)
    assert f"{FILE}: [tunnel] log_syslog_address: " in message
    assert fragment in message
    assert "udp:HOST:PORT" in message


def test_log_syslog_address_needs_syslog_target() -> None:
    message = error_of("[tunnel]\nlog_syslog_address = udp:127.0.0.1:514\n" + LISTENER)
    assert "[tunnel] log_target: log_syslog_address is only used with log_target = syslog" in (
        message
    )
