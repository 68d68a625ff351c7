"""A failed handshake's metric label comes from OpenSSL's reason code, not from text."""

from __future__ import annotations

import contextlib
import ssl

import pytest
import trustme

from tunnel.dataplane.tls_endpoint import describe, handshake_failure
from tunnel.observe.reasons import HandshakeFailure


def server_error(client_bytes: bytes | None = None, **client_opts: object) -> ssl.SSLError:
    """The error a server SSLObject raises for a client's first flight."""
    ca = trustme.CA()
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    server_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    if client_bytes is None:
        client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ca.configure_trust(client_ctx)
        for name, value in client_opts.items():
            setattr(client_ctx, name, value)
        c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        client = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
        with contextlib.suppress(ssl.SSLWantReadError):
            client.do_handshake()
        client_bytes = c_out.read()
    s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    s_in.write(client_bytes)
    with pytest.raises(ssl.SSLError) as info:
        server.do_handshake()
    return info.value


def test_an_http_request_is_not_tls() -> None:
    exc = server_error(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert handshake_failure(exc) is HandshakeFailure.NOT_TLS
    assert describe(exc) == "http request"


def test_an_old_client_has_an_unsupported_version() -> None:
    exc = server_error(maximum_version=ssl.TLSVersion.TLSv1_2)
    assert handshake_failure(exc) is HandshakeFailure.UNSUPPORTED_VERSION


def test_input_that_stops_is_a_client_that_closed() -> None:
    ca = trustme.CA()
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    s_in = ssl.MemoryBIO()
    server = server_ctx.wrap_bio(s_in, ssl.MemoryBIO(), server_side=True)
    s_in.write_eof()
    with pytest.raises(ssl.SSLError) as info:
        server.do_handshake()
    assert handshake_failure(info.value) is HandshakeFailure.CLIENT_CLOSED


def test_an_unknown_code_is_other() -> None:
    exc = ssl.SSLError(1, "something new")
    exc.reason = "SOMETHING_NEW"  # type: ignore[misc]
    assert handshake_failure(exc) is HandshakeFailure.OTHER
