"""Config checks found in use: client mode with proxy_from, a missing '=', ``tunnel check``
reporting everything at once, and how a max_connections above the open-files limit is told."""

from __future__ import annotations

import logging
import resource
from pathlib import Path

import pytest
import trustme

from tunnel.cli.main import main
from tunnel.config import parse_config
from tunnel.dataplane.worker import Worker
from tunnel.errors import ConfigError, ConfigErrors

FILE = "/etc/tunnel/t.ini"
BACKEND = "[backend:remote]\nconnect = 192.0.2.1:443\ntls = yes\n"
CLIENT = "[plain]\naccept = 127.0.0.1:8443\nclient = yes\nbackend = remote\n"
LISTENER = "[web]\naccept = 127.0.0.1:8443\ncert = /c/web.pem\nconnect = 127.0.0.1:8080\n"


def errors_of(text: str) -> list[ConfigError]:
    with pytest.raises(ConfigErrors) as info:
        parse_config(text, FILE)
    for error in info.value.errors:
        assert error.file == FILE and error.hint, str(error)
    return info.value.errors


# --------------------------------------------------------------------------- client + proxy_from


def test_client_mode_alone_is_valid() -> None:
    (listener,) = parse_config(BACKEND + CLIENT, FILE).listeners
    assert listener.client and listener.backend == "remote"


def test_client_mode_refuses_proxy_from() -> None:
    """The worker would serve plaintext client mode and never read the PROXY header."""
    (error,) = errors_of(BACKEND + CLIENT + "proxy_from = 10.0.0.0/8\n")
    assert (error.section, error.key) == ("plain", "proxy_from")
    assert "client = yes" in error.message and "PROXY" in error.message
    assert f"{FILE}: [plain] proxy_from:" in str(error)


def test_client_mode_refuses_proxy_from_inherited_from_tunnel() -> None:
    (error,) = errors_of("[tunnel]\nproxy_from = 10.0.0.0/8\n" + BACKEND + CLIENT)
    assert (error.section, error.key) == ("plain", "client")
    assert "[tunnel]" in error.message
    assert "move proxy_from" in (error.hint or "")


def test_client_mode_ignores_alpn_inherited_from_tunnel() -> None:
    """ALPN means nothing to plaintext clients; an inherited list must not block the file."""
    web = LISTENER.replace(":8443", ":9443")
    config = parse_config("[tunnel]\nalpn = h2\n" + BACKEND + CLIENT + web, FILE)
    plain, web = config.listeners
    assert plain.alpn == () and web.alpn == ("h2",)
    (error,) = errors_of(BACKEND + CLIENT + "alpn = h2\n")
    assert (error.section, error.key) == ("plain", "alpn")


# --------------------------------------------------------------------------- missing '='


@pytest.mark.parametrize("line", ["accept 1.2.3.4:1", "accept\t1.2.3.4:1", "ACCEPT  1.2.3.4:1"])
def test_missing_equals_is_a_syntax_error_on_its_line(line: str) -> None:
    text = "[web]\ncert = /c/web.pem\n" + line + "\nconnect = 127.0.0.1:8080\n"
    (error,) = errors_of(text)  # and not also "required key 'accept' is missing"
    assert (error.section, error.key) == ("web", "accept")
    assert error.message.startswith("line 3: ")
    assert "has no '='" in error.message
    assert error.hint == "write 'accept = 1.2.3.4:1'"
    assert str(error).startswith(f"{FILE}: [web] accept: line 3:")


def test_missing_equals_after_an_unknown_word_is_still_a_located_syntax_error() -> None:
    errors = errors_of(LISTENER + "idle timeout = 5s\n")
    (error,) = errors
    assert error.section == "web" and error.key is None
    assert "line 5: cannot parse 'idle timeout = 5s'" in error.message


# --------------------------------------------------------------------------- tunnel check


BOTH_KINDS = """\
[tunnel]
workers = many

[web]
accept 127.0.0.1:8443
cert = missing-web.pem
connect = 127.0.0.1:8080
route = sni:a.example.com=nowhere

[api]
accept = 127.0.0.1:9443
cert = missing-api.pem
connect = 127.0.0.1:8080
"""


def run_check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["check", "-c", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


def test_check_reports_file_problems_with_syntax_and_value_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "both.ini"
    path.write_text(BOTH_KINDS)
    code, out, err = run_check(path, capsys)
    assert code == 2 and out == ""
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    expected = [  # syntax, values and references, files of unbuilt sections, certificates
        f"error: {path}: [web] accept: line 5: 'accept 127.0.0.1:8443' has no '='",
        f"error: {path}: [tunnel] workers: 'many' is not a whole number",
        f"error: {path}: [web] route: unknown backend 'nowhere'",
        f"error: {path}: [web] cert: file {tmp_path / 'missing-web.pem'} does not exist",
        f"error: {path}: [api] cert: {tmp_path / 'missing-api.pem'} does not exist",
    ]
    assert len(errors) == len(expected), err
    for line, start in zip(errors, expected, strict=True):
        assert line.startswith(start), (line, start)
    assert "5 problems found" in err


def test_check_reads_files_only_of_sections_that_did_not_build(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A section that parsed is loaded as `run` would; its missing file is told once."""
    path = tmp_path / "one.ini"
    path.write_text(BOTH_KINDS.split("[web]")[0] + "[api]" + BOTH_KINDS.split("[api]")[1])
    code, _out, err = run_check(path, capsys)
    assert code == 2
    assert err.count("missing-api.pem") == 1


# --------------------------------------------------------------------------- max_connections


@pytest.fixture
def low_nofile(monkeypatch: pytest.MonkeyPatch) -> None:
    """An open-files limit of 1024, soft and hard, as `ulimit -n 1024` sets it."""
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (1024, 1024))


@pytest.mark.usefixtures("low_nofile")
@pytest.mark.parametrize(("setting", "level"), [("", logging.INFO), ("5000", logging.WARNING)])
def test_capped_default_max_connections_is_info_a_written_one_a_warning(
    setting: str, level: int, caplog: pytest.LogCaptureFixture
) -> None:
    tunnel = f"[tunnel]\nmax_connections = {setting}\n" if setting else ""
    config = parse_config(tunnel + LISTENER, FILE)
    with caplog.at_level(logging.DEBUG, logger="tunnel.worker"):
        worker = Worker(config, {}, {})
    assert worker.max_connections == (1024 - 64) // 2
    (record,) = [r for r in caplog.records if "needs more open files" in r.getMessage()]
    assert record.levelno == level


@pytest.fixture
def cert_file(tmp_path: Path) -> Path:
    path = tmp_path / "site.pem"
    trustme.CA().issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(str(path))
    return path


@pytest.mark.usefixtures("low_nofile")
@pytest.mark.parametrize("setting", ["", "5000"])
def test_check_shows_the_capped_max_connections(
    setting: str, cert_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tunnel = f"[tunnel]\nmax_connections = {setting}\n" if setting else ""
    path = tmp_path / "t.ini"
    path.write_text(tunnel + LISTENER.replace("/c/web.pem", str(cert_file)))
    code, out, err = run_check(path, capsys)
    assert code == 0, err
    wanted = setting or "10000"
    assert f"max_connections {wanted} (open-files limit 1024: 480 per worker)" in out
    assert ("WARN: max_connections" in err) is bool(setting)


@pytest.mark.parametrize("built", [0, 1, 2])
def test_check_reports_a_missing_inherited_file_once(
    built: int, tmp_path: Path, cert_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing file that a [tunnel] default names is told by each listener built with it
    (as `run` would), else once at [tunnel]; never again for the sections that failed."""
    listeners = [
        f"[l{i}]\naccept = 127.0.0.1:{i + 1}\ncert = {cert_file}\nconnect = 127.0.0.1:9\n"
        + ("" if i < built else "backlog = 0\n")
        for i in range(2)
    ]
    path = tmp_path / "t.ini"
    path.write_text("[tunnel]\nticket_key_file = nope.key\nworkers = many\n" + "".join(listeners))
    code, _out, err = run_check(path, capsys)
    assert code == 2
    told = [line for line in err.splitlines() if "nope.key" in line]
    assert len(told) == max(built, 1), err
    assert ("[tunnel] ticket_key_file" in told[0]) is (built == 0)
