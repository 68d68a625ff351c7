"""A truncated handshake gets its alert whatever CPython 3.11 builds the contexts.

CPython 3.10.0 to 3.11.2 (Debian 12's python3, which the .deb runs on) create every
``SSLContext`` with ``OP_IGNORE_UNEXPECTED_EOF`` set; 3.11.3 and later do not (gh-95494).
With it set, OpenSSL takes an EOF in the middle of a handshake for close_notify and sends
no alert. These tests build contexts as 3.11.2 does, on any interpreter, and check that
Tunnel's own contexts do not keep the option and so answer in TLS.
"""

from __future__ import annotations

import contextlib
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme
from harness.hello import openssl_first_flight

from tunnel.config import Address, BackendConfig, ListenerConfig
from tunnel.dataplane import backends
from tunnel.tls.backend import build_backend_context
from tunnel.tls.contexts import build_server_tls
from tunnel.tls.eof import strict_eof
from tunnel.tls.secret_files import write_private_file
from tunnel.tls.selfsigned import make_self_signed

IGNORE_EOF = ssl.OP_IGNORE_UNEXPECTED_EOF
DECODE_ERROR_ALERT = b"\x15\x03\x03\x00\x02\x02\x32"  # TLS record: fatal decode_error


@pytest.fixture
def old_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every context built from now on (``create_default_context``'s too) starts as on
    CPython 3.10.0-3.11.2: with unexpected EOFs ignored."""
    made = ssl.SSLContext.__new__

    def new(cls: type[ssl.SSLContext], *args: Any, **kwargs: Any) -> ssl.SSLContext:
        ctx = made(cls, *args, **kwargs)
        ctx.options |= IGNORE_EOF
        return ctx

    monkeypatch.setattr(ssl.SSLContext, "__new__", staticmethod(new))
    monkeypatch.setattr(backends, "_UNVERIFIED", None)  # built afresh under the old default
    assert ssl.create_default_context().options & IGNORE_EOF


def truncated_hello_answer(server_ctx: ssl.SSLContext) -> bytes:
    """What the server writes after half a ClientHello and then an end of input."""
    ca = trustme.CA()
    ca.issue_cert("localhost").configure_cert(server_ctx)
    hello = openssl_first_flight("localhost")
    s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    s_in.write(hello[: len(hello) // 2])
    with contextlib.suppress(ssl.SSLWantReadError):
        server.do_handshake()
    s_in.write_eof()  # what relay.py does on a FIN or at the handshake timeout
    with pytest.raises(ssl.SSLError):
        server.do_handshake()
    return s_out.read()


@pytest.mark.usefixtures("old_default")
def test_the_old_default_swallows_the_alert_and_strict_eof_restores_it() -> None:
    """Why strict_eof exists: with the option set, OpenSSL answers with nothing at all."""
    assert truncated_hello_answer(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)) == b""
    ctx = strict_eof(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    assert not ctx.options & IGNORE_EOF
    assert truncated_hello_answer(ctx) == DECODE_ERROR_ALERT


@pytest.mark.usefixtures("old_default")
def test_listener_contexts_answer_a_truncated_hello_with_an_alert(tmp_path: Path) -> None:
    """Every certificate group's context (the SNI table's too), as both planes use them."""
    pems = []
    for name in ("a.example", "b.example"):
        pem = tmp_path / f"{name}.pem"
        write_private_file(pem, make_self_signed([name]))
        pems.append(str(pem))
    listener = ListenerConfig(
        name="web",
        accept=(Address("tcp", host="127.0.0.1", port=1),),
        cert=tuple(pems),
        key=None,
        connect=(Address("tcp", host="127.0.0.1", port=2),),
    )
    tls = build_server_tls(listener)
    assert len(tls.contexts) == 2
    for ctx in tls.contexts:
        assert not ctx.options & IGNORE_EOF
    assert truncated_hello_answer(tls.default) == DECODE_ERROR_ALERT


@pytest.mark.usefixtures("old_default")
def test_backend_and_health_check_contexts_see_an_eof_as_an_error() -> None:
    """The compiled plane ignores a bare FIN only after a backend handshake, per connection."""
    backend = BackendConfig(
        name="api", connect=(Address("tcp", host="127.0.0.1", port=2),), tls=True
    )
    for ctx in (build_backend_context(backend), backends._unverified()):
        assert not ctx.options & IGNORE_EOF
