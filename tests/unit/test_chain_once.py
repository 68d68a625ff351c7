"""A certificate's chain built once at set-up sends what OpenSSL built per handshake.

Without a chain in the certificate file, OpenSSL builds one from the context's trust store
(a listener's client_ca) at every handshake; tunnel._native.openssl.build_chain_once builds
it when the certificate is loaded. The server's Certificate message must be the same byte
for byte, with and without a store that can complete the chain, and with a file that
carries its own chain (where nothing is built), on TLS 1.2 and 1.3.
"""

from __future__ import annotations

import contextlib
import ssl
from pathlib import Path
from typing import Any

import pytest
import trustme

from tunnel._native.openssl import build_chain_once

VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[bytes], dict[str, Path]]:
    """(the intermediate's and root's DER, the files)."""
    root = trustme.CA()
    intermediate = root.create_child_ca()
    leaf = intermediate.issue_cert("localhost")
    d = tmp_path_factory.mktemp("pki")
    files = {name: d / f"{name}.pem" for name in ("leaf", "full", "key", "cas")}
    leaf.cert_chain_pems[0].write_to_path(str(files["leaf"]))
    files["full"].write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(files["key"]))
    files["cas"].write_bytes(intermediate.cert_pem.bytes() + root.cert_pem.bytes())
    cas = [ssl.PEM_cert_to_DER_cert(ca.cert_pem.bytes().decode()) for ca in (intermediate, root)]
    return cas, files


def server(
    files: dict[str, Path], cert: str, store: bool, once: bool
) -> tuple[ssl.SSLContext, bool]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if store:  # as client_auth does, before the certificates are loaded
        ctx.load_verify_locations(cafile=str(files["cas"]))
        ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.load_cert_chain(files[cert], files["key"])
    return ctx, build_chain_once(ctx) if once else False


def certificate_message(srv: ssl.SSLContext, version: str) -> bytes:
    """The server's Certificate handshake message, as the client received it."""
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE  # only the bytes matter (a leaf alone does not verify)
    client.minimum_version = client.maximum_version = VERSIONS[version]
    seen: list[bytes] = []

    def record(_conn: Any, direction: str, _v: Any, content: Any, msg: Any, data: bytes) -> None:
        if direction == "read" and content == 22 and msg == 11:  # handshake, Certificate
            seen.append(data)

    client._msg_callback = record  # type: ignore[attr-defined]
    bios = [ssl.MemoryBIO() for _ in range(4)]
    cli = client.wrap_bio(bios[0], bios[1], server_hostname="localhost")
    srv_obj = srv.wrap_bio(bios[2], bios[3], server_side=True)
    for _ in range(6):
        for obj in (cli, srv_obj):
            with contextlib.suppress(ssl.SSLWantReadError):
                obj.do_handshake()
        bios[2].write(bios[1].read())
        bios[0].write(bios[3].read())
    assert cli.version() == f"TLSv{version}"
    assert len(seen) == 1
    return seen[0]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("cert", "store", "built"),
    [("leaf", True, True), ("leaf", False, True), ("full", True, False), ("full", False, False)],
    ids=["leaf+store", "leaf-only", "chain+store", "chain"],
)
def test_same_certificates_sent(
    pki: tuple[list[bytes], dict[str, Path]], version: str, cert: str, store: bool, built: bool
) -> None:
    cas, files = pki
    per_handshake, _ = server(files, cert, store, once=False)
    once, did_build = server(files, cert, store, once=True)
    assert did_build == built
    expected = certificate_message(per_handshake, version)
    assert certificate_message(once, version) == expected
    # The store or the file completed the chain (OpenSSL sends the root it found too).
    assert all((der in expected) == (store or cert == "full") for der in cas[:1])
    assert (cas[1] in expected) == (cert == "leaf" and store)
