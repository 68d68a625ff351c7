"""``tunnel check``, ``gen-cert``, ``--version`` and ``run`` with a bad configuration."""

from __future__ import annotations

import datetime
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import trustme

from .conftest import REPO, Certs, Launcher, base_env, free_port, write_certs, write_config

pytestmark = pytest.mark.timeout(60)

BAD_CONFIG = """\
[tunnel]
workers = many
drain_timout = 10s

[web]
accept = 127.0.0.1:99999
cert = {cert}
connect = 127.0.0.1:8080
idle_timeout = forever

[api]
accept = 127.0.0.1:8444
cert = {cert}
"""


def test_version(tunnel: Launcher) -> None:
    result = tunnel.run("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("tunnel ")


def test_no_command_shows_usage(tunnel: Launcher) -> None:
    result = tunnel.run()
    assert result.returncode == 2
    assert "run" in result.stderr and "check" in result.stderr


def test_check_good_config_summarises(tunnel: Launcher, certs: Certs, tmp_path: Path) -> None:
    config = write_config(tmp_path / "good.ini", certs, free_port(), 8080, workers="3")
    result = tunnel.run("check", "-c", str(config))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"{config}: OK" in out
    assert "workers 3" in out
    assert "listener [web]" in out and "-> connect 127.0.0.1:8080" in out
    assert "TLS 1.2-1.3" in out
    assert "handshake 5s" in out and "connect 5s" in out and "idle 5m" in out
    assert "names localhost" in out and "ECDSA" in out
    assert "WARN" not in result.stderr
    assert "Traceback" not in result.stderr


def test_check_bad_config_lists_every_error(tunnel: Launcher, certs: Certs, tmp_path: Path) -> None:
    config = tmp_path / "bad.ini"
    config.write_text(BAD_CONFIG.format(cert=certs.cert_pem))
    result = tunnel.run("check", "-c", str(config))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    expected = [
        "[tunnel] workers",
        "[tunnel] drain_timout",
        "did you mean 'drain_timeout'",
        "[web] accept",
        "[web] idle_timeout",
        "[api] connect",
    ]
    for text in expected:
        assert any(text in line for line in errors), (text, result.stderr)
    assert all(line.startswith(f"error: {config}: [") for line in errors)
    assert len(errors) >= 5
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_check_missing_cert_and_key_mismatch(
    tunnel: Launcher, certs: Certs, ca: trustme.CA, tmp_path: Path
) -> None:
    other = write_certs(ca, tmp_path / "other")
    config = tmp_path / "certs.ini"
    config.write_text(
        f"[missing]\naccept = 127.0.0.1:{free_port()}\ncert = {tmp_path}/nope.pem\n"
        "connect = 127.0.0.1:8080\n\n"
        f"[mismatch]\naccept = 127.0.0.1:{free_port()}\ncert = {certs.cert_pem}\n"
        f"key = {other.key_pem}\nconnect = 127.0.0.1:8080\n"
    )
    result = tunnel.run("check", "-c", str(config))
    assert result.returncode == 2
    assert f"[missing] cert: {tmp_path}/nope.pem does not exist" in result.stderr
    assert "[mismatch]" in result.stderr and "does not match" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_missing_file(tunnel: Launcher, tmp_path: Path) -> None:
    result = tunnel.run("check", "-c", str(tmp_path / "absent.ini"))
    assert result.returncode == 2
    assert "absent.ini" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("days", "word"), [(10, "expires in"), (-2, "EXPIRED")])
def test_check_warns_about_expiry(
    tunnel: Launcher, ca: trustme.CA, tmp_path: Path, days: int, word: str
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    certs = write_certs(
        ca,
        tmp_path / "soon",
        not_before=now - datetime.timedelta(days=30),
        not_after=now + datetime.timedelta(days=days),
    )
    config = write_config(tmp_path / "soon.ini", certs, free_port(), 8080)
    result = tunnel.run("check", "-c", str(config))
    assert result.returncode == 0, result.stderr
    warning = [line for line in result.stderr.splitlines() if line.startswith("WARN")]
    assert len(warning) == 1
    assert "[web]" in warning[0] and str(certs.cert_pem) in warning[0] and word in warning[0]


def test_run_bad_config_exits_2(tunnel: Launcher, tmp_path: Path, certs: Certs) -> None:
    config = tmp_path / "bad.ini"
    config.write_text(BAD_CONFIG.format(cert=certs.cert_pem))
    result = tunnel.run("run", "-c", str(config), timeout=30)
    assert result.returncode == 2
    assert "[tunnel] drain_timout: unknown key" in result.stderr
    assert f"tunnel check -c {config}" in result.stderr.splitlines()[-1]
    assert "Traceback" not in result.stderr


def test_run_port_in_use_exits_2(tunnel: Launcher, tmp_path: Path, certs: Certs) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        config = write_config(tmp_path / "busy.ini", certs, port, 8080)
        result = tunnel.run("run", "-c", str(config), timeout=30)
    assert result.returncode == 2
    assert f"[web] accept: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_gen_cert_then_check_shipped_config(tunnel: Launcher, home: Path) -> None:
    result = tunnel.run("gen-cert")
    assert result.returncode == 0, result.stderr
    pem = home / ".local" / "state" / "tunnel" / "demo.pem"
    assert str(pem) in result.stdout
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    text = pem.read_text()
    assert "BEGIN CERTIFICATE" in text and "PRIVATE KEY" in text

    again = tunnel.run("gen-cert")
    assert again.returncode == 2
    assert "--force" in again.stderr
    assert pem.read_text() == text
    assert tunnel.run("gen-cert", "--force").returncode == 0
    assert pem.read_text() != text

    check = tunnel.run("check", "-c", str(REPO / "tunnel.ini"))
    assert check.returncode == 0, check.stderr
    assert "listener [web]" in check.stdout and str(pem) in check.stdout
    if os.geteuid() == 0:  # the shipped file has no `user`: run would refuse root; say so
        assert "[tunnel] user: refusing to serve as root" in check.stderr
        assert "would refuse to start" in check.stderr


def test_gen_cert_custom_path_and_names(tunnel: Launcher, tmp_path: Path) -> None:
    out = tmp_path / "site" / "site.pem"
    result = tunnel.run("gen-cert", "--out", str(out), "--name", "example.test", "--name", "::1")
    assert result.returncode == 0, result.stderr
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(out.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["example.test"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["::1"]


def test_console_script_installed(home: Path) -> None:
    script = shutil.which("tunnel")
    if script is None:
        pytest.skip("the 'tunnel' console script is not on PATH (package not installed)")
    result = subprocess.run(
        [script, "--version"], capture_output=True, text=True, env=base_env(home), timeout=30
    )
    assert result.returncode == 0
    assert result.stdout.startswith("tunnel ")
    bad = subprocess.run(
        [script, "check", "-c", "/nonexistent/tunnel.ini"],
        capture_output=True,
        text=True,
        env=base_env(home),
        timeout=30,
    )
    assert bad.returncode == 2


def test_check_names_each_listeners_data_plane(
    tunnel: Launcher, certs: Certs, tmp_path: Path
) -> None:
    """The compiled plane serves a plain listener; one needing a Python-only feature says
    which feature keeps it on the Python plane."""
    plain = write_config(tmp_path / "plain.ini", certs, free_port(), 8080)
    result = tunnel.run("check", "-c", str(plain))
    assert result.returncode == 0, result.stderr
    forced = os.environ.get("TUNNEL_DATAPLANE", "").strip().lower() == "python"
    if forced:
        assert "data plane: python (TUNNEL_DATAPLANE=python)" in result.stdout
    else:
        assert "data plane: compiled" in result.stdout
    # keylog_file, deny_ja4 and the per-IP rates are compiled too.
    policies = tmp_path / "policies.ini"
    policies.write_text(
        plain.read_text()
        + f"keylog_file = {tmp_path / 'keys.log'}\n"
        + "deny_ja4 = t13d1516h2_8daaf6152771_e5627efa2ab1\n"
        + "max_connection_rate_per_ip = 20/s\nmax_handshake_rate_per_ip = 10/s\n"
    )
    result = tunnel.run("check", "-c", str(policies))
    assert result.returncode == 0, result.stderr
    if not forced:
        assert "data plane: compiled" in result.stdout
    client = tmp_path / "client.ini"
    client.write_text(
        plain.read_text().split("[web]")[0]
        + "[web]\naccept = 127.0.0.1:0\nclient = yes\nbackend = remote\n\n"
        + "[backend:remote]\nconnect = 127.0.0.1:9443\ntls = yes\n"
    )
    result = tunnel.run("check", "-c", str(client))
    assert result.returncode == 0, result.stderr
    if not forced:  # client mode is compiled (fp_plain_client.c)
        assert "data plane: compiled" in result.stdout
    proxied = tmp_path / "proxied.ini"
    proxied.write_text(plain.read_text() + "proxy_from = 10.0.0.0/8\nproxy_keep_tlvs = yes\n")
    result = tunnel.run("check", "-c", str(proxied))
    assert result.returncode == 0, result.stderr
    if not forced:  # PROXY in is compiled (fp_proxy.c)
        assert "data plane: compiled" in result.stdout
    # TLS to a backend runs on the compiled plane, its key log too.
    backend = f"\n[backend:secure]\nconnect = 127.0.0.1:8443\ntls = yes\nca = {certs.ca_pem}\n"
    secure = tmp_path / "secure.ini"
    web = plain.read_text().replace("connect = 127.0.0.1:8080", "backend = secure")
    secure.write_text(web + backend)
    logged = tmp_path / "logged.ini"
    logged.write_text(secure.read_text() + f"keylog_file = {tmp_path / 'backend-keys.log'}\n")
    for path in (secure, logged):
        result = tunnel.run("check", "-c", str(path))
        assert result.returncode == 0, result.stderr
        if not forced:
            assert "data plane: compiled" in result.stdout, result.stdout
