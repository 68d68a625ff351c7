"""TLS-ALPN-01 on the listener: only an acme-tls/1-only ClientHello for a pending name ever
sees the challenge certificate (in-memory handshakes, no sockets)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from cryptography import x509

from tunnel.config import parse_config
from tunnel.tls.acme.challenge import ACME_IDENTIFIER, challenge_pem
from tunnel.tls.acme.store import StateDir, write_private
from tunnel.tls.contexts import ServerTLS, build_server_tls

NAME = "example.test"


@pytest.fixture
def listener_tls(tmp_path: Path) -> ServerTLS:
    text = (
        f"[acme]\ndirectory = https://ca.test/dir\nstate_dir = {tmp_path}\n"
        f"[web]\naccept = 127.0.0.1:8443\nacme = {NAME}\nconnect = 127.0.0.1:80\n"
    )
    return build_server_tls(parse_config(text).listeners[0])


def handshake(
    server: ServerTLS, alpn: list[str] | None, name: str = NAME, version: str = "1.3"
) -> tuple[str | None, x509.Certificate] | str:
    """The negotiated ALPN and the server's leaf, or the server-side error's reason."""
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    client_ctx.maximum_version = getattr(ssl.TLSVersion, f"TLSv1_{version[-1]}")
    if alpn:
        client_ctx.set_alpn_protocols(alpn)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=name)
    tls = server.default.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(6):
        for side in (client, tls):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                if side is tls:
                    return str(exc.reason)
                raise
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    der = client.getpeercert(binary_form=True)
    assert der is not None
    return client.selected_alpn_protocol(), x509.load_der_x509_certificate(der)


def is_challenge(cert: x509.Certificate) -> bool:
    return any(ext.oid == ACME_IDENTIFIER for ext in cert.extensions)


def test_acme_tls_1_without_a_pending_challenge_is_refused(listener_tls: ServerTLS) -> None:
    assert handshake(listener_tls, ["acme-tls/1"]) == "CALLBACK_FAILED"


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_pending_challenge_goes_to_acme_tls_1_only(
    listener_tls: ServerTLS, tmp_path: Path, version: str
) -> None:
    write_private(StateDir(str(tmp_path)).alpn_challenge(NAME), challenge_pem(NAME, "t.k"))
    result = handshake(listener_tls, ["acme-tls/1"], version=version)
    assert isinstance(result, tuple)
    assert result[0] == "acme-tls/1" and is_challenge(result[1])
    for alpn in (None, ["h2", "http/1.1"], ["h2", "acme-tls/1"]):
        other = handshake(listener_tls, alpn, version=version)
        assert isinstance(other, tuple)
        assert other[0] is None and not is_challenge(other[1]), alpn
    assert handshake(listener_tls, ["acme-tls/1"], name="other.test") == "CALLBACK_FAILED"
