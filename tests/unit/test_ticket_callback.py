"""The session-ticket key callback: the C one where built, the ctypes one otherwise.

Handshakes run in-process over memory BIOs (the Python plane's SSLObjects; the compiled
plane uses the same SSL_CTX, so the same callback). Both implementations must behave the
same: new keys take effect at once, a ticket of an older key still listed resumes and is
renewed with the current key, a retired key's ticket does not resume.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tunnel._native import tickets as native_tickets
from tunnel.tls.selfsigned import make_self_signed
from tunnel.tls.tickets import TicketKeys

BUILT = native_tickets.extension() is not None
KINDS = [pytest.param("C", marks=pytest.mark.skipif(not BUILT, reason="not built")), "ctypes"]
VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


@pytest.fixture(scope="module")
def cert_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cert") / "server.pem"
    path.write_bytes(make_self_signed(["localhost", "other.test"]))
    return path


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Each test runs with the C callback (where built) and with the ctypes fallback."""
    if request.param == "ctypes":
        monkeypatch.setattr(native_tickets, "extension", lambda: None)
    yield request.param


def server_context(cert_file: Path, keys: TicketKeys) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file)
    keys.install(ctx)
    return ctx


def client_context(version: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = VERSIONS[version]
    return ctx


def connect(
    server: ssl.SSLContext, client: ssl.SSLContext, session: ssl.SSLSession | None = None
) -> tuple[ssl.SSLSession, bool]:
    """One handshake and one byte each way (which delivers TLS 1.3 tickets)."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    tls_c = client.wrap_bio(c_in, c_out, server_hostname="other.test", session=session)
    tls_s = server.wrap_bio(s_in, s_out, server_side=True)
    done = [False, False]
    for _ in range(20):
        for index, end in enumerate((tls_c, tls_s)):
            if not done[index]:
                try:
                    end.do_handshake()
                    done[index] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done):
            break
    assert all(done), "the handshake did not finish"
    tls_s.write(b"x")
    c_in.write(s_out.read())
    assert tls_c.read(1) == b"x"
    assert tls_c.session is not None
    return tls_c.session, tls_c.session_reused


def write_keys(path: Path, *keys: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(b"".join(keys))
    os.replace(tmp, path)


@pytest.mark.parametrize("version", VERSIONS)
def test_new_keys_take_effect_and_old_tickets_are_renewed(
    kind: str, version: str, cert_file: Path, tmp_path: Path
) -> None:
    old, new = os.urandom(80), os.urandom(80)
    path = tmp_path / "tickets.key"
    write_keys(path, old)
    keys = TicketKeys(str(path))
    assert keys.callback == kind
    server, client = server_context(cert_file, keys), client_context(version)
    old_session, resumed = connect(server, client)
    assert not resumed
    assert connect(server, client, old_session)[1]

    write_keys(path, new, old)  # rotation: the new key first, the old one still accepted
    assert keys.refresh()
    renewed, resumed = connect(server, client, old_session)
    assert resumed, "a ticket of a listed older key resumes"

    write_keys(path, new)  # the old key retired
    assert keys.refresh()
    assert not connect(server, client, old_session)[1]
    assert connect(server, client, renewed)[1], "the renewed ticket is the new key's"
    fresh, _ = connect(server, client)
    assert connect(server, client, fresh)[1]


def test_a_context_with_other_keys_does_not_resume(
    kind: str, cert_file: Path, tmp_path: Path
) -> None:
    (tmp_path / "a.key").write_bytes(os.urandom(80))
    (tmp_path / "b.key").write_bytes(os.urandom(80))
    first = server_context(cert_file, TicketKeys(str(tmp_path / "a.key")))
    second = server_context(cert_file, TicketKeys(str(tmp_path / "b.key")))
    same = server_context(cert_file, TicketKeys(str(tmp_path / "a.key")))
    client = client_context("1.3")
    session, _ = connect(first, client)
    assert not connect(second, client, session)[1]
    assert connect(same, client, session)[1], "another store of the same file resumes"


@pytest.mark.skipif(not BUILT, reason="the C callback is not built")
def test_the_c_callback_serves_and_counts(
    cert_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_python(*_args: object) -> None:
        raise AssertionError("the ctypes callback was built although C is there")

    monkeypatch.setattr(native_tickets, "ticket_callback", no_python)
    old, new = os.urandom(80), os.urandom(80)
    path = tmp_path / "tickets.key"
    write_keys(path, old)
    keys = TicketKeys(str(path))
    callback = keys._callback
    assert isinstance(callback, native_tickets.CCallback)
    # Two contexts, as a listener with two certificate groups has: the SNI callback moves
    # the connection to the second one before tickets are issued; the table is on both.
    default = server_context(cert_file, keys)
    switched = server_context(cert_file, keys)

    def to_switched(sslobj: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> None:
        sslobj.context = switched

    default.sni_callback = to_switched
    client = client_context("1.3")
    session, _ = connect(default, client)
    assert callback.counts() == (2, 0, 0, 0)  # TLS 1.3 sends two tickets
    assert connect(default, client, session)[1]
    # Resumed with the current key: OpenSSL 3.0 sends no new ticket (none is expected).
    assert callback.counts() == (2, 1, 0, 0)

    write_keys(path, new, old)
    assert keys.refresh()
    assert connect(default, client, session)[1]
    assert callback.counts() == (3, 1, 1, 0), "a ticket of the older key is renewed"
    write_keys(path, new)
    assert keys.refresh()
    assert not connect(default, client, session)[1]
    assert callback.counts()[1:] == (1, 1, 1), "a retired key's ticket is unknown"
