"""Unit tests for the operations keys of [tunnel] and for the certificate watch."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunnel.config import parse_config
from tunnel.errors import ConfigErrors
from tunnel.process.watch import changed, watched_files

LISTENER = "[web]\naccept = 127.0.0.1:8443\ncert = a.pem, b.pem\nconnect = 127.0.0.1:8080\n"


def parse(tunnel: str, listener: str = LISTENER) -> ConfigErrors | object:
    try:
        return parse_config(f"[tunnel]\n{tunnel}\n{listener}", "/etc/tunnel/t.ini")
    except ConfigErrors as exc:
        return exc


def test_defaults() -> None:
    config = parse_config(LISTENER, "/etc/tunnel/t.ini")
    assert config.tunnel.watch is False
    assert config.tunnel.pid_file is None
    assert config.tunnel.log_file is None


@pytest.mark.parametrize(
    ("text", "value"),
    [("yes", True), ("Yes", True), ("true", True), ("on", True), ("1", True), ("no", False)],
)
def test_watch_boolean(text: str, value: bool) -> None:
    config = parse_config(f"[tunnel]\nwatch = {text}\n{LISTENER}", "t.ini")
    assert config.tunnel.watch is value


def test_watch_rejects_other_words() -> None:
    result = parse("watch = maybe")
    assert isinstance(result, ConfigErrors)
    assert str(result.errors[0]) == (
        "/etc/tunnel/t.ini: [tunnel] watch: 'maybe' is not yes or no (use yes or no)"
    )


def test_paths_resolve_against_config_directory() -> None:
    config = parse_config(
        f"[tunnel]\npid_file = run/t.pid\nlog_target = file\nlog_file = /var/log/t.log\n{LISTENER}",
        "/etc/tunnel/t.ini",
    )
    assert config.tunnel.pid_file == "/etc/tunnel/run/t.pid"
    assert config.tunnel.log_file == "/var/log/t.log"


def test_log_file_needs_file_target_and_vice_versa() -> None:
    result = parse("log_target = file")
    assert isinstance(result, ConfigErrors)
    assert "[tunnel] log_file: log_target = file needs a log_file" in str(result)
    result = parse("log_file = /tmp/x.log")
    assert isinstance(result, ConfigErrors)
    assert "[tunnel] log_target: log_file is only used with log_target = file" in str(result)


def test_ops_keys_only_in_tunnel_section() -> None:
    result = parse("", LISTENER + "watch = yes\n")
    assert isinstance(result, ConfigErrors)
    assert "'watch' belongs in [tunnel]" in str(result)


def test_watched_files_lists_cert_and_key_files_once() -> None:
    text = (
        LISTENER
        + "[api]\naccept = 127.0.0.1:9443\ncert = a.pem\nkey = k.pem\nconnect = 127.0.0.1:1\n"
    )
    config = parse_config(text, "/etc/tunnel/t.ini")
    assert watched_files(config) == ["/etc/tunnel/a.pem", "/etc/tunnel/b.pem", "/etc/tunnel/k.pem"]


def test_watched_files_include_ca_crl_and_cert_dir(tmp_path: Path) -> None:
    (tmp_path / "b.pem").write_text("")
    (tmp_path / "a.crt").write_text("")
    (tmp_path / "notes.txt").write_text("")
    text = (
        "[web]\naccept = 127.0.0.1:8443\nconnect = 127.0.0.1:1\n"
        f"cert_dir = {tmp_path}\nclient_ca = ca.pem\nverify = required\ncrl = r1.pem, r2.pem\n"
    )
    config = parse_config(text, "/etc/tunnel/t.ini")
    assert watched_files(config) == [
        "/etc/tunnel/ca.pem",
        str(tmp_path),
        str(tmp_path / "a.crt"),
        str(tmp_path / "b.pem"),
        "/etc/tunnel/r1.pem",
        "/etc/tunnel/r2.pem",
    ]


def test_changed() -> None:
    before = {"a": (1, 10, 100), "b": (2, 20, 200), "c": None}
    assert changed(before, dict(before)) == []
    after = {"a": (1, 10, 101), "b": (3, 20, 200), "c": (4, 1, 1)}
    assert changed(before, after) == ["a", "b", "c"]
    assert changed(before, {**before, "a": None}) == ["a"]
