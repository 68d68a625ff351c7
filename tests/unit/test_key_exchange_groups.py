"""Key exchange groups: OpenSSL's defaults unless ``curves`` is set, and the negotiated one.

In-memory handshakes (no sockets) between a listener's server context, built as ``run``
builds it, and clients offering one group each.
"""

from __future__ import annotations

import contextlib
import ssl
from pathlib import Path

import pytest
import trustme

from tunnel._native import openssl as _openssl
from tunnel.config import Address, ListenerConfig
from tunnel.tls.contexts import build_server_context
from tunnel.tls.groups import effective_groups, group_name


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def listener(ca: trustme.CA, directory: Path, curves: str | None) -> ListenerConfig:
    cert = ca.issue_cert("localhost")
    path = directory / "server.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(path))
    return ListenerConfig(
        name="web",
        accept=(Address("tcp", "127.0.0.1", 1),),
        cert=(str(path),),
        key=None,
        connect=(Address("tcp", "127.0.0.1", 2),),
        curves=curves,
    )


def handshake(server: ssl.SSLContext, ca: trustme.CA, groups: str) -> ssl.SSLObject:
    """A TLS 1.3 handshake over memory BIOs with a client that offers only ``groups``."""
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    _openssl.set_groups(client_ctx, groups)
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server_obj = server.wrap_bio(s_in, s_out, server_side=True)
    client_obj = client_ctx.wrap_bio(c_in, c_out, server_hostname="localhost")
    for _ in range(4):
        for obj in (client_obj, server_obj):
            with contextlib.suppress(ssl.SSLWantReadError):
                obj.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    assert server_obj.version() == "TLSv1.3"
    return server_obj


@pytest.mark.parametrize("group", ["P-521", "X448", "X25519", "P-256", "ffdhe2048"])
def test_without_curves_openssl_defaults_serve_every_group(
    ca: trustme.CA, tmp_path: Path, group: str
) -> None:
    server = build_server_context(listener(ca, tmp_path, None))
    assert _openssl.negotiated_group(handshake(server, ca, group)) == group


def test_curves_still_narrows(ca: trustme.CA, tmp_path: Path) -> None:
    server = build_server_context(listener(ca, tmp_path, "X25519:P-256"))
    with pytest.raises(ssl.SSLError):
        handshake(server, ca, "P-521")
    assert _openssl.negotiated_group(handshake(server, ca, "P-256")) == "P-256"


def test_no_group_before_the_handshake() -> None:
    obj = ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO())
    assert _openssl.negotiated_group(obj) is None


def test_effective_groups() -> None:
    default = effective_groups(None)
    assert {"X25519", "P-256", "P-384", "P-521", "X448"} <= set(default)
    assert effective_groups("P-384:X25519") == ("P-384", "X25519")
    assert effective_groups("no-such-group") == ()
    assert group_name(0x11EC) == "X25519MLKEM768" and group_name(0x1234) == "0x1234"
