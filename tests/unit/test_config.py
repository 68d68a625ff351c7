"""Unit tests for tunnel.config: parsing, validation, error reporting, the shipped example."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunnel.config import (
    INHERITABLE_KEYS,
    KEYS,
    LISTENER_KEYS,
    TUNNEL_KEYS,
    Address,
    Config,
    ConfigValueError,
    ListenerConfig,
    Scope,
    TunnelSettings,
    load_config,
    parse_address,
    parse_config,
    parse_duration,
    parse_size,
)
from tunnel.errors import ConfigError, ConfigErrors

REPO_ROOT = Path(__file__).resolve().parents[2]
FILE = "/etc/tunnel/test.ini"

MINIMAL = """\
[web]
accept = 127.0.0.1:8443
cert = /certs/web.pem
connect = 127.0.0.1:8080
"""


def parse(text: str) -> Config:
    return parse_config(text, FILE)


def errors_of(text: str, path: str = FILE) -> list[ConfigError]:
    with pytest.raises(ConfigErrors) as info:
        parse_config(text, path)
    assert info.value.errors, "ConfigErrors must not be empty"
    for error in info.value.errors:
        assert error.file == path
        assert error.hint, f"every error needs a hint: {error}"
    return info.value.errors


def one_error(text: str) -> ConfigError:
    errors = errors_of(text)
    assert len(errors) == 1, [str(e) for e in errors]
    return errors[0]


def listener(text: str = "", name: str = "web", **keys: str) -> str:
    """A valid listener section, with ``keys`` overriding or adding lines."""
    values = {"accept": "127.0.0.1:8443", "cert": "/certs/web.pem", "connect": "127.0.0.1:8080"}
    values.update(keys)
    body = "".join(f"{k} = {v}\n" for k, v in values.items())
    return f"[{name}]\n{body}{text}"


def assert_located(error: ConfigError, section: str | None, key: str | None, *words: str) -> None:
    text = str(error)
    assert error.section == section
    assert error.key == key
    assert FILE in text
    if section is not None:
        assert f"[{section}]" in text
    if key is not None:
        assert key in text
    for word in words:
        assert word in text, text


# --------------------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("500ms", 0.5),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("10", 10.0),
        ("1.5s", 1.5),
        (" 2 S ", 2.0),
        ("0.25", 0.25),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "3x", "s", "-1s", "1e3", "nan", "inf", "1 2s", "0", "0ms"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|greater than zero") as info:
        parse_duration(text)
    assert isinstance(info.value, ConfigValueError)
    assert info.value.hint


def test_parse_duration_zero_when_allowed() -> None:
    assert parse_duration("0s", allow_zero=True) == 0.0


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4096", 4096),
        ("64k", 65536),
        ("64K", 65536),
        ("1m", 1 << 20),
        ("1M", 1 << 20),
        ("1g", 1 << 30),
        ("64kb", 65536),
        ("64KiB", 65536),
        ("100b", 100),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "k", "1.5m", "-1", "1t", "0", "0k", "9" * 5000])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"size|greater than zero"):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8443", Address("tcp", host="127.0.0.1", port=8443)),
        ("example.com:443", Address("tcp", host="example.com", port=443)),
        ("localhost:1", Address("tcp", host="localhost", port=1)),
        ("[::1]:8443", Address("tcp", host="::1", port=8443)),
        ("[::]:65535", Address("tcp", host="::", port=65535)),
        ("[fe80::1%eth0]:80", Address("tcp", host="fe80::1%eth0", port=80)),
        ("*:443", Address("tcp", host="0.0.0.0", port=443)),
        ("unix:/run/app.sock", Address("unix", path="/run/app.sock")),
        ("unix:rel/app.sock", Address("unix", path="rel/app.sock")),
    ],
)
def test_parse_address(text: str, expected: Address) -> None:
    assert parse_address(text) == expected


def test_address_str_round_trips() -> None:
    for text in ["127.0.0.1:1", "[::1]:2", "unix:/x.sock"]:
        assert str(parse_address(text)) == text


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("127.0.0.1", "not an address"),
        (":80", "not an address"),
        ("host:", "port"),
        ("host:0", "out of range"),
        ("host:65536", "out of range"),
        ("host:http", "port"),
        ("host:-1", "port"),
        ("::1:80", "brackets"),
        ("[1.2.3.4]:80", "not an IPv6"),
        ("[zz]:80", "not an IPv6"),
        ("999.1.1.1:80", "not a valid host"),
        ("bad_host!:80", "not a valid host"),
        ("-bad.com:80", "not a valid host"),
        ("unix:", "socket path"),
    ],
)
def test_parse_address_rejects(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)):
        parse_address(text)


# --------------------------------------------------------------------------- defaults


def test_minimal_config_defaults() -> None:
    config = parse(MINIMAL)
    assert config.path == FILE
    assert config.tunnel == TunnelSettings()
    (web,) = config.listeners
    assert web == ListenerConfig(
        name="web",
        accept=(Address("tcp", host="127.0.0.1", port=8443),),
        cert=("/certs/web.pem",),
        key=None,
        connect=(Address("tcp", host="127.0.0.1", port=8080),),
    )
    assert web.handshake_timeout == 10.0
    assert web.connect_timeout == 5.0
    assert web.idle_timeout == 300.0
    assert web.buffer_size == 262144
    assert web.backlog == 1024
    assert web.proxy_protocol == "off"
    assert (web.tls_min, web.tls_max) == ("1.2", "1.3")
    assert web.max_connections == 10000


def test_tunnel_section_values() -> None:
    config = parse(
        """\
[tunnel]
workers = 4
log_level = DEBUG
log_target = syslog
log_facility = local3
max_connections = 500
drain_timeout = 2m
"""
        + MINIMAL
    )
    assert config.tunnel == TunnelSettings(
        workers=4,
        log_level="debug",
        log_target="syslog",
        log_facility="local3",
        max_connections=500,
        drain_timeout=120.0,
    )
    assert config.listeners[0].max_connections == 500


def test_workers_auto_and_zero_drain() -> None:
    config = parse("[tunnel]\nworkers = Auto\ndrain_timeout = 0\n" + MINIMAL)
    assert config.tunnel.workers == 0
    assert config.tunnel.drain_timeout == 0.0


def test_listener_keys_all_set() -> None:
    config = parse(
        listener(
            tls_min="TLSv1.3",
            tls_max="1.3",
            ciphers="ECDHE+AESGCM:!aNULL",
            ciphersuites="TLS_AES_128_GCM_SHA256",
            curves="X25519:P-256",
            handshake_timeout="500ms",
            connect_timeout="2",
            idle_timeout="1h",
            max_connections="7",
            buffer_size="1m",
            backlog="16",
            proxy_protocol="V2",
            key="/certs/web.key",
        )
    )
    web = config.listeners[0]
    assert web.tls_min == web.tls_max == "1.3"
    assert web.ciphers == "ECDHE+AESGCM:!aNULL"
    assert web.ciphersuites == "TLS_AES_128_GCM_SHA256"
    assert web.curves == "X25519:P-256"
    assert web.handshake_timeout == 0.5
    assert web.connect_timeout == 2.0
    assert web.idle_timeout == 3600.0
    assert web.max_connections == 7
    assert web.buffer_size == 1 << 20
    assert web.backlog == 16
    assert web.proxy_protocol == "v2"
    assert web.key == "/certs/web.key"


def test_keys_are_case_insensitive_and_inline_comments_allowed() -> None:
    config = parse(
        "[web]\nACCEPT = 127.0.0.1:8443  # public side\n"
        "Cert = /certs/web.pem ; chain + key\nconnect: 127.0.0.1:8080\n"
    )
    web = config.listeners[0]
    assert web.accept == (Address("tcp", host="127.0.0.1", port=8443),)
    assert web.cert == ("/certs/web.pem",)


def test_byte_order_mark_is_ignored() -> None:
    assert parse("\ufeff" + MINIMAL).listeners[0].name == "web"


# --------------------------------------------------------------------------- inheritance


def test_listener_inherits_from_tunnel_and_can_override() -> None:
    text = (
        "[tunnel]\ntls_min = 1.3\nidle_timeout = 60s\nproxy_protocol = v1\n"
        "buffer_size = 16k\nbacklog = 99\ncurves = X25519\nciphers = HIGH\n"
        "ciphersuites = TLS_AES_256_GCM_SHA384\nhandshake_timeout = 3s\n"
        "connect_timeout = 1s\ntls_max = 1.3\n"
        + listener(name="a")
        + listener(
            name="b",
            accept="127.0.0.1:9443",
            idle_timeout="5s",
            proxy_protocol="off",
            tls_min="1.2",
        )
    )
    a, b = parse(text).listeners
    assert (a.tls_min, a.idle_timeout, a.proxy_protocol) == ("1.3", 60.0, "v1")
    assert (a.buffer_size, a.backlog, a.curves, a.ciphers) == (16384, 99, "X25519", "HIGH")
    assert a.ciphersuites == "TLS_AES_256_GCM_SHA384"
    assert (a.handshake_timeout, a.connect_timeout) == (3.0, 1.0)
    assert (b.tls_min, b.idle_timeout, b.proxy_protocol) == ("1.2", 5.0, "off")
    assert b.buffer_size == 16384


def test_listener_max_connections_override() -> None:
    text = "[tunnel]\nmax_connections = 50\n" + listener(max_connections="5")
    assert parse(text).listeners[0].max_connections == 5


def test_inherited_keys_are_all_listener_keys() -> None:
    assert INHERITABLE_KEYS <= LISTENER_KEYS
    assert INHERITABLE_KEYS <= TUNNEL_KEYS
    assert {"accept", "cert", "key", "connect"}.isdisjoint(TUNNEL_KEYS)


# --------------------------------------------------------------------------- lists and paths


def test_accept_and_connect_lists() -> None:
    web = parse(
        listener(
            accept="127.0.0.1:8443, [::1]:8443  *:9443",
            connect="unix:/run/a.sock,\n  10.0.0.2:80\n  [2001:db8::1]:80",
        )
    ).listeners[0]
    assert [str(a) for a in web.accept] == ["127.0.0.1:8443", "[::1]:8443", "0.0.0.0:9443"]
    assert [str(a) for a in web.connect] == [
        "unix:/run/a.sock",
        "10.0.0.2:80",
        "[2001:db8::1]:80",
    ]


def test_several_certs() -> None:
    web = parse(listener(cert="/c/rsa.pem, /c/ecdsa.pem")).listeners[0]
    assert web.cert == ("/c/rsa.pem", "/c/ecdsa.pem")
    assert web.key is None


def test_relative_paths_resolve_against_config_directory() -> None:
    text = listener(cert="certs/web.pem", key="../keys/web.key", connect="unix:run/app.sock")
    web = parse_config(text, "/etc/tunnel/tunnel.ini").listeners[0]
    assert web.cert == ("/etc/tunnel/certs/web.pem",)
    assert web.key == "/etc/keys/web.key"
    assert web.connect == (Address("unix", path="/etc/tunnel/run/app.sock"),)


def test_relative_paths_unchanged_without_a_file() -> None:
    web = parse_config(listener(cert="web.pem")).listeners[0]
    assert web.cert == ("web.pem",)


def test_explicit_base_dir() -> None:
    web = parse_config(listener(cert="web.pem"), "x.ini", base_dir="/srv").listeners[0]
    assert web.cert == ("/srv/web.pem",)


def test_home_is_expanded() -> None:
    web = parse(listener(cert="~/tls/web.pem", connect="unix:~/app.sock")).listeners[0]
    home = os.path.expanduser("~")
    assert web.cert == (os.path.join(home, "tls/web.pem"),)
    assert web.connect[0].path == os.path.join(home, "app.sock")


# --------------------------------------------------------------------------- error paths


def test_value_error_message_format() -> None:
    error = one_error(listener(handshake_timeout="3x"))
    assert str(error) == (
        f"{FILE}: [web] handshake_timeout: '3x' is not a duration (use e.g. 10s, 500ms, 2m)"
    )


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("handshake_timeout", "0", "greater than zero"),
        ("handshake_timeout", "301s", "too long"),
        ("connect_timeout", "-5s", "not a duration"),
        ("idle_timeout", "8d", "not a duration"),
        ("idle_timeout", "200h", "too long"),
        ("buffer_size", "1k", "out of range"),
        ("buffer_size", "32m", "out of range"),
        ("buffer_size", "lots", "not a size"),
        ("backlog", "0", "out of range"),
        ("backlog", "many", "not a whole number"),
        ("max_connections", "0", "out of range"),
        ("proxy_protocol", "v3", "off, v1, v2"),
        ("tls_min", "1.4", "not a TLS version"),
        ("tls_max", "1.0", "insecure"),
        ("curves", "X25519 P-256", "curve list"),
        ("accept", "unix:/run/x.sock", "TCP"),
        ("accept", "127.0.0.1", "not an address"),
        ("connect", "*:80", "all interfaces"),
        ("connect", "[::1]", "port"),
        ("ciphers", "", "no value"),
        ("key", "", "no value"),
        ("accept", "", "empty"),
        ("cert", "a.pem,,b.pem", "empty path"),
    ],
)
def test_listener_value_errors(key: str, value: str, fragment: str) -> None:
    error = one_error(listener(**{key: value}))
    assert_located(error, "web", key, fragment)


@pytest.mark.parametrize("version", ["1.0", "1.1", "TLSv1", "tls1.1", "SSLv3"])
def test_old_tls_is_insecure(version: str) -> None:
    error = one_error(listener(tls_min=version))
    assert_located(error, "web", "tls_min", "insecure", "1.2 or 1.3")


def test_tls_min_above_max() -> None:
    error = one_error(listener(tls_min="1.3", tls_max="1.2"))
    assert_located(error, "web", "tls_min", "tls_max")


def test_tls_min_above_max_in_tunnel_is_reported_once() -> None:
    error = one_error("[tunnel]\ntls_min = 1.3\ntls_max = 1.2\n" + listener())
    assert_located(error, "tunnel", "tls_min")


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("workers", "0", "auto or 1..256"),
        ("workers", "257", "auto or 1..256"),
        ("workers", "two", "auto or 1..256"),
        ("log_level", "verbose", "debug, info, warning, error"),
        ("log_target", "console", "stderr, syslog, file"),
        ("log_facility", "local8", "local7"),
        ("max_connections", "-1", "whole number"),
        ("drain_timeout", "2h", "too long"),
        ("drain_timeout", "soon", "not a duration"),
        ("handshake_timeout", "3x", "not a duration"),
        ("buffer_size", "1", "out of range"),
    ],
)
def test_tunnel_value_errors(key: str, value: str, fragment: str) -> None:
    error = one_error(f"[tunnel]\n{key} = {value}\n" + listener())
    assert_located(error, "tunnel", key, fragment)


@pytest.mark.parametrize("key", ["accept", "cert", "connect"])
def test_missing_required_key(key: str) -> None:
    lines = [line for line in listener().splitlines() if not line.startswith(key)]
    error = one_error("\n".join(lines) + "\n")
    assert_located(error, "web", key, "missing", f"{key} = ")


def test_empty_listener_reports_each_missing_key() -> None:
    errors = errors_of("[web]\n")
    assert [(e.section, e.key) for e in errors] == [
        ("web", "accept"),
        ("web", "cert"),
        ("web", "connect"),
    ]


def test_unknown_key_did_you_mean() -> None:
    error = one_error(listener("idle_timout = 5s\n"))
    assert_located(error, "web", "idle_timout", "unknown key", "did you mean 'idle_timeout'?")


def test_unknown_key_in_tunnel_did_you_mean() -> None:
    error = one_error("[tunnel]\nlog_levl = info\n" + listener())
    assert_located(error, "tunnel", "log_levl", "did you mean 'log_level'?")


def test_unknown_key_without_close_match_lists_known_keys() -> None:
    error = one_error(listener("zzzzzz = 1\n"))
    assert_located(error, "web", "zzzzzz", "known keys:", "accept")


def test_key_in_wrong_section() -> None:
    errors = errors_of("[tunnel]\naccept = 127.0.0.1:1\n" + listener("workers = 2\n"))
    assert len(errors) == 2
    assert_located(errors[0], "tunnel", "accept", "belongs in a listener section")
    assert_located(errors[1], "web", "workers", "belongs in [tunnel]")


def test_key_with_several_certs() -> None:
    error = one_error(listener(cert="a.pem, b.pem", key="a.key"))
    assert_located(error, "web", "key", "several certificates")


def test_duplicate_accept_across_listeners() -> None:
    text = listener(name="a") + listener(name="b", accept="10.0.0.1:1, 127.0.0.1:8443")
    error = one_error(text)
    assert_located(error, "b", "accept", "already accepted by [a]")


def test_duplicate_accept_reported_even_if_listener_has_other_errors() -> None:
    text = listener(name="a") + "[b]\naccept = 127.0.0.1:8443\n"
    errors = errors_of(text)
    assert {(e.section, e.key) for e in errors} == {
        ("b", "accept"),
        ("b", "cert"),
        ("b", "connect"),
    }
    assert any("already accepted by [a]" in str(e) for e in errors)


def test_duplicate_accept_within_listener() -> None:
    error = one_error(listener(accept="127.0.0.1:8443 127.0.0.1:8443"))
    assert_located(error, "web", "accept", "listed twice")


def test_unix_path_too_long() -> None:
    error = one_error(listener(connect="unix:/" + "x" * 200))
    assert_located(error, "web", "connect", "too long")


def test_no_listeners() -> None:
    for text in ["", "# just a comment\n", "[tunnel]\nworkers = 2\n"]:
        error = one_error(text)
        assert error.section is None
        assert "no listener" in str(error)
        assert "add a listener section with accept/cert/connect" in str(error)


@pytest.mark.parametrize("name", ["pool:api", "frontend:x"])
def test_section_with_colon_not_supported(name: str) -> None:
    error = one_error(f"[{name}]\nfoo = 1\n" + listener())
    assert_located(error, name, None, "not supported yet")


@pytest.mark.parametrize("name", ["DEFAULT", "Tunnel", "TUNNEL"])
def test_special_looking_sections(name: str) -> None:
    error = one_error(f"[{name}]\nworkers = 2\n" + listener())
    assert_located(error, name, None, "[tunnel]")


def test_default_section_does_not_leak_into_listeners() -> None:
    errors = errors_of("[DEFAULT]\nbacklog = 5\n" + listener())
    assert [e.section for e in errors] == ["DEFAULT"]


@pytest.mark.parametrize("name", ["web site", "-web", "wéb"])
def test_bad_listener_name(name: str) -> None:
    error = one_error(f"[{name}]\n" + listener(name="ok"))
    assert_located(error, name, None, "invalid listener name")


# --------------------------------------------------------------------------- syntax errors


def test_text_before_first_section() -> None:
    error = one_error("workers = 2\n" + MINIMAL)
    assert "line 1" in str(error)
    assert "[tunnel]" in str(error)


def test_unparsable_lines_report_line_numbers() -> None:
    errors = errors_of(MINIMAL + "garbage\n" + listener("more garbage\n", name="b"))
    lines = [e for e in errors if "cannot parse" in str(e)]
    assert ["line 5" in str(lines[0]), "line 10" in str(lines[1])] == [True, True]
    assert "'garbage'" in str(lines[0])


def test_duplicate_key() -> None:
    error = one_error(MINIMAL + "backlog = 5\nbacklog = 6\n")
    assert_located(error, "web", "backlog", "line 6", "set twice")
    # the rest of the file is still checked after a duplicate:
    errors = errors_of(MINIMAL + "backlog = 5\nbacklog = 6\nidle_timout = 1\n")
    assert [e.key for e in errors] == ["backlog", "idle_timout"]


def test_duplicate_section() -> None:
    errors = errors_of(MINIMAL + "[web]\nbacklog = 1\n")
    assert_located(errors[0], "web", None, "line 5", "appears twice")


# --------------------------------------------------------------------------- many errors


def test_every_problem_is_reported_at_once() -> None:
    text = """\
[tunnel]
workers = lots
log_levl = info

[web]
accept = 127.0.0.1:99999
cert = /c.pem
connect = 127.0.0.1:8080
handshake_timeout = 3x
tls_min = 1.0

[api]
accept = [::1]:8443
"""
    errors = errors_of(text)
    # In the order of the file; missing keys after the section's other problems.
    assert [(e.section, e.key) for e in errors] == [
        ("tunnel", "workers"),
        ("tunnel", "log_levl"),
        ("web", "accept"),
        ("web", "handshake_timeout"),
        ("web", "tls_min"),
        ("api", "cert"),
        ("api", "connect"),
    ]
    with pytest.raises(ConfigErrors) as info:
        parse(text)
    assert str(info.value).count("\n") == len(errors) - 1


# --------------------------------------------------------------------------- load_config


def test_load_config_resolves_relative_paths(tmp_path: Path) -> None:
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    conf = conf_dir / "tunnel.ini"
    conf.write_text(
        listener(cert="certs/a.pem", key="a.key", connect="unix:sock/app.sock"), encoding="utf-8"
    )
    web = load_config(str(conf)).listeners[0]
    assert web.cert == (str(conf_dir / "certs/a.pem"),)
    assert web.key == str(conf_dir / "a.key")
    assert web.connect == (Address("unix", path=str(conf_dir / "sock/app.sock")),)


def test_load_config_relative_config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "t.ini").write_text(listener(cert="a.pem"), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    config = load_config("t.ini")
    assert config.path == "t.ini"
    assert config.listeners[0].cert == (str(tmp_path / "a.pem"),)


def test_load_config_errors_name_the_file(tmp_path: Path) -> None:
    conf = tmp_path / "bad.ini"
    conf.write_text(listener(backlog="x"), encoding="utf-8")
    with pytest.raises(ConfigErrors) as info:
        load_config(str(conf))
    assert str(conf) in str(info.value)


def test_load_config_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.ini")
    with pytest.raises(ConfigErrors) as info:
        load_config(path)
    (error,) = info.value.errors
    assert error.file == path
    assert "not found" in str(error)
    assert error.hint


def test_load_config_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors) as info:
        load_config(str(tmp_path))
    (error,) = info.value.errors
    assert error.file == str(tmp_path)
    assert "cannot read" in str(error)


def test_load_config_not_utf8(tmp_path: Path) -> None:
    conf = tmp_path / "latin1.ini"
    conf.write_bytes(MINIMAL.encode() + b"# caf\xe9\n")
    with pytest.raises(ConfigErrors) as info:
        load_config(str(conf))
    (error,) = info.value.errors
    assert error.file == str(conf)
    assert "UTF-8" in str(error)


def test_load_config_utf8_bom(tmp_path: Path) -> None:
    conf = tmp_path / "bom.ini"
    conf.write_bytes(b"\xef\xbb\xbf" + MINIMAL.encode())
    assert load_config(str(conf)).listeners[0].name == "web"


# --------------------------------------------------------------------------- shipped example

EXAMPLE = REPO_ROOT / "tunnel.ini"


def test_shipped_example_parses() -> None:
    config = load_config(str(EXAMPLE))
    (web,) = config.listeners
    assert web.name == "web"
    assert web.accept == (Address("tcp", host="127.0.0.1", port=8443),)
    assert web.connect == (Address("tcp", host="127.0.0.1", port=8080),)
    assert web.cert == (os.path.expanduser("~/.local/state/tunnel/demo.pem"),)
    assert web.key is None
    assert config.tunnel == TunnelSettings()
    defaults = ListenerConfig(web.name, web.accept, web.cert, web.key, web.connect)
    assert web == defaults, "the example should show the defaults"


def example_parts() -> dict[Scope, str]:
    """tunnel.ini's text for each scope: [tunnel], the [web] listener, the backend comment."""
    text = EXAMPLE.read_text(encoding="utf-8")
    tunnel, rest = text.split("\n[web]\n", 1)
    listener, backend = rest.split("\n# [backend:NAME] sections", 1)
    backend, acme = backend.split("\n# [acme]:", 1)
    return {
        Scope.TUNNEL: tunnel,
        Scope.LISTENER: listener,
        Scope.DEFAULT: listener,
        Scope.BACKEND: backend,
        Scope.ACME: acme,
    }


@pytest.mark.parametrize(
    ("key", "scope"),
    [(k.name, scope) for k in KEYS for scope in Scope if k.scope & scope],
)
def test_shipped_example_documents_every_key(key: str, scope: Scope) -> None:
    """Every key of the schema is shown and described where it may be written."""
    text = example_parts()[scope]
    if scope is Scope.BACKEND:  # one comment block lists the backend keys
        assert re.search(rf"^#.*\b{key}\b", text, re.MULTILINE), f"no backend {key!r}"
        return
    setting = re.compile(rf"^[#;]?\s*{key}\s*=", re.MULTILINE)
    described = re.compile(rf"^#\s*(?:\w+ / )?{key}(?: / \w+)?(?: \(required\))?:", re.MULTILINE)
    assert setting.search(text), f"tunnel.ini shows no example line for {key!r}"
    assert described.search(text), f"tunnel.ini does not describe {key!r}"


def test_shipped_example_lists_the_listener_defaults() -> None:
    """The [tunnel] part lists exactly the keys [tunnel] may set for every listener."""
    tunnel = example_parts()[Scope.TUNNEL]
    listing = tunnel.split("does not set it itself.", 1)[1].split("\n\n", 1)[0]
    comments = [line for line in listing.splitlines()[1:] if line.startswith("#")]
    listed = set(re.findall(r"\b[a-z][a-z0-9_]+\b", "\n".join(comments)))
    assert listed == set(INHERITABLE_KEYS)


# --------------------------------------------------------------------------- robustness


def assert_parses_or_config_errors(text: str) -> None:
    try:
        result = parse_config(text, "fuzz.ini")
    except ConfigErrors as exc:
        assert exc.errors
        assert all(isinstance(e, ConfigError) for e in exc.errors)
        str(exc)
    else:
        assert isinstance(result, Config)


FUZZ = settings(max_examples=200, deadline=None)
VALID = (
    "[tunnel]\nworkers = 2\nidle_timeout = 1m\n\n"
    + listener(name="a", connect="unix:run/x.sock 10.0.0.1:80")
    + "\n"
    + listener(name="b", accept="[::1]:9443")
)


@FUZZ
@given(st.text())
def test_fuzz_arbitrary_text(text: str) -> None:
    assert_parses_or_config_errors(text)


@FUZZ
@given(st.integers(min_value=0, max_value=VALID.count("\n")), st.text())
def test_fuzz_text_inserted_into_valid_config(line: int, junk: str) -> None:
    lines = VALID.splitlines(keepends=True)
    assert_parses_or_config_errors("".join([*lines[:line], junk, *lines[line:]]))


@FUZZ
@given(
    st.sampled_from(sorted(TUNNEL_KEYS | LISTENER_KEYS)),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40),
    st.booleans(),
)
def test_fuzz_arbitrary_values(key: str, value: str, in_tunnel: bool) -> None:
    value = value.replace("\n", " ").replace("\r", " ")
    if in_tunnel:
        text = f"[tunnel]\n{key} = {value}\n" + listener()
    else:
        text = listener(f"{key} = {value}\n") if key not in ("accept", "cert", "connect") else ""
        text = text or listener(**{key: value})
    assert_parses_or_config_errors(text)
