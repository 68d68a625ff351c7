"""``tunnel check`` with several certificates, a cert_dir, backends and routes."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import trustme

from .conftest import Certs, Launcher, reserve_port


def test_check_lists_every_certificate_and_route(
    tunnel: Launcher, certs: Certs, tmp_path: Path
) -> None:
    ca = certs.ca
    directory = tmp_path / "certs.d"
    directory.mkdir()
    ca.issue_cert("api.example.com").private_key_and_cert_chain_pem.write_to_path(
        str(directory / "api.pem")
    )
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=3)
    ca.issue_cert("*.example.com", not_after=soon).private_key_and_cert_chain_pem.write_to_path(
        str(directory / "wild.pem")
    )
    combined = tmp_path / "default.pem"
    combined.write_bytes(certs.cert_pem.read_bytes() + certs.key_pem.read_bytes())
    root = "allow_root = yes\n" if os.geteuid() == 0 else ""
    config = tmp_path / "tls.ini"
    config.write_text(
        f"[tunnel]\nworkers = 1\n{root}\n"
        "[backend:api]\nconnect = 127.0.0.1:9001, 127.0.0.1:9002\n\n"
        f"[front]\naccept = 127.0.0.1:{reserve_port()}\ncert = {combined}\n"
        f"cert_dir = {directory}\nconnect = 127.0.0.1:8080\n"
        "alpn = h2, http/1.1\nroute = sni:api.example.com=api, alpn:h2=api\n"
    )
    result = tunnel.run("check", "-c", str(config))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "names localhost, 127.0.0.1" in out
    assert "names api.example.com" in out
    assert "names *.example.com" in out
    assert "routes sni:api.example.com=api, alpn:h2=api" in out
    assert "wild.pem: expires in" in result.stderr  # WARN: soon to expire


def test_check_reports_unknown_backend_and_key_mismatch(
    tunnel: Launcher, certs: Certs, tmp_path: Path
) -> None:
    other = trustme.CA().issue_cert("localhost")
    wrong_key = tmp_path / "wrong.key"
    other.private_key_pem.write_to_path(str(wrong_key))
    config = tmp_path / "bad.ini"
    config.write_text(
        f"[backend:api]\nconnect = 127.0.0.1:9001\n\n"
        f"[front]\naccept = 127.0.0.1:{reserve_port()}\ncert = {certs.cert_pem}\n"
        f"key = {certs.key_pem}\nbackend = apj\n"
    )
    result = tunnel.run("check", "-c", str(config))
    assert result.returncode == 2
    assert "did you mean 'api'?" in result.stderr
    config.write_text(
        f"[front]\naccept = 127.0.0.1:{reserve_port()}\ncert = {certs.cert_pem}\n"
        f"key = {wrong_key}\nconnect = 127.0.0.1:1\n"
    )
    result = tunnel.run("check", "-c", str(config))
    assert result.returncode == 2
    assert "key does not match" in result.stderr


def test_check_shows_each_listeners_key_exchange_groups(
    tunnel: Launcher, certs: Certs, tmp_path: Path
) -> None:
    root = "allow_root = yes\n" if os.geteuid() == 0 else ""
    cert = f"cert = {certs.cert_pem}\nkey = {certs.key_pem}\nconnect = 127.0.0.1:8080\n"
    config = tmp_path / "groups.ini"
    config.write_text(
        f"[tunnel]\nworkers = 1\n{root}\n"
        f"[openssl]\naccept = 127.0.0.1:{reserve_port()}\n{cert}\n"
        f"[narrow]\naccept = 127.0.0.1:{reserve_port()}\n{cert}curves = P-384:X25519\n"
    )
    result = tunnel.run("check", "-c", str(config))
    assert result.returncode == 0, result.stderr
    lines = [line.strip() for line in result.stdout.splitlines() if "exchange groups" in line]
    # Without curves, OpenSSL's own default list: it has X448 and P-521 too.
    assert lines[0].startswith("key exchange groups (OpenSSL default): X25519, ")
    assert "X448" in lines[0] and "P-521" in lines[0]
    assert lines[1] == "key exchange groups (curves): P-384, X25519"
