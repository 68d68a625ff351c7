"""Client certificates: how a listener verifies them, and what one says for a PROXY header.

Every context of a listener gets the same verification (``client_ca``, ``crl``, ``verify``
and the allow-lists, see :func:`client_auth`); :func:`client_cert` reads a verified
client certificate for the PROXY v2 SSL TLVs.
"""

from __future__ import annotations

import ssl
from typing import cast

from tunnel._native import openssl as _openssl
from tunnel.config import ListenerConfig
from tunnel.errors import TLSSetupError
from tunnel.tls.identity import AllowListCheck, AllowLists
from tunnel.tls.x509_compat import key_algorithm
from tunnel.wire.proxy_out import ClientCert

_VERIFY_MODES = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}


def allow_list_check(listener: ListenerConfig) -> AllowListCheck | None:
    """The listener's allow-list check, if it has allow-lists (shared by its contexts)."""
    allow = AllowLists(
        frozenset(listener.allow_cn), frozenset(listener.allow_dns), frozenset(listener.allow_uri)
    )
    if listener.verify == "none" or not listener.client_ca or not allow:
        return None
    return AllowListCheck(allow)


def client_auth(
    ctx: ssl.SSLContext, listener: ListenerConfig, file: str, check: AllowListCheck | None
) -> None:
    """client_ca, verify, crl and allow-lists (every context of a listener gets them)."""
    if listener.verify == "none" or not listener.client_ca:
        return
    paths = [("client_ca", p) for p in listener.client_ca] + [("crl", p) for p in listener.crl]
    for key, path in paths:
        try:
            ctx.load_verify_locations(cafile=path)
        except (OSError, ssl.SSLError) as exc:
            raise TLSSetupError(
                f"{path}: cannot load ({getattr(exc, 'strerror', None) or exc})",
                file=file,
                section=listener.name,
                key=key,
                hint="give a readable PEM file",
            ) from None
    preload_x509()
    if listener.crl:
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    ctx.verify_mode = _VERIFY_MODES[listener.verify]
    if check is not None:
        _openssl.set_leaf_check(ctx, check)


def preload_x509() -> None:
    """Import ``cryptography.x509`` now, for a listener that takes client certificates.

    Workers parse client certificates with it (allow-lists, PROXY v2 certificate TLVs).
    Serving processes import it only when a listener asks for client certificates, and
    then here, in the supervisor before the fork, so every worker shares its pages rather
    than importing a private copy at its first client certificate.
    """
    import cryptography.x509  # noqa: F401


def client_cert(sslobj: ssl.SSLObject, *, der: bool = False) -> ClientCert | None:
    """What the client's certificate says for a PROXY v2 header; None without one.

    ``getpeercert()`` only returns the parsed certificate when the context verifies
    peers (mTLS). OpenSSL fails the handshake on a certificate that does not verify, so
    one that is present here has verify result 0. The DER form (parsed once per
    connection by ``cryptography``) supplies the signature and key algorithm names.
    """
    try:
        raw = sslobj.getpeercert(binary_form=True)
    except ValueError:  # handshake not done
        return None
    if not raw:
        return None
    parsed = sslobj.getpeercert() or {}
    subject = cast(tuple[tuple[tuple[str, str], ...], ...], parsed.get("subject", ()))
    cn = None
    for rdn in subject:
        for name, value in rdn:
            if name == "commonName":
                cn = value
    sig_alg = key_alg = None
    from cryptography import x509  # only with client certificates: see preload_x509

    try:
        cert = x509.load_der_x509_certificate(raw)
        sig_alg = cert.signature_algorithm_oid._name
        key_alg = key_algorithm(cert)
        if cn is None:
            names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
            cn = str(names[0].value) if names else None
    except ValueError:
        pass  # OpenSSL accepted what cryptography cannot parse: send what we know
    return ClientCert(
        cn=cn,
        sig_alg=sig_alg,
        key_alg=key_alg,
        verify=0,
        this_connection=not sslobj.session_reused,
        der=raw if der else None,
    )
