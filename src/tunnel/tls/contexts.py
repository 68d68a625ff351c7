"""TLS contexts from listener configuration; the only code that reads key and cert files.

Client-certificate settings (client_ca, crl, verify, allow-lists) and what a client's
certificate says live in :mod:`tunnel.tls.clients`.

Defaults follow Mozilla's "intermediate" profile: TLS 1.2 and 1.3 only, ECDHE key exchange
with AEAD ciphers only, server cipher preference for TLS 1.2, no compression and no
client-initiated renegotiation. Contexts are built in the supervisor before workers fork,
so every worker shares the same session-ticket keys and a client resumes on any of them.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tunnel._native import openssl as _openssl
from tunnel.config import ListenerConfig
from tunnel.config.routing import NameTable, build_name_table
from tunnel.errors import TLSSetupError
from tunnel.tls.certs import CertFile, CertGroup, group_certificates, listener_cert_files
from tunnel.tls.clients import allow_list_check, client_auth
from tunnel.tls.eof import strict_eof
from tunnel.tls.identity import AllowListCheck
from tunnel.tls.secret_files import set_keylog
from tunnel.tls.tickets import TicketKeyError, TicketKeys
from tunnel.tls.x509_compat import first_pem_certificate, not_after

log = logging.getLogger("tunnel.tls")

# Mozilla intermediate TLS 1.2 suites, ECDHE only (no DHE, CBC, CCM or legacy ciphers).
DEFAULT_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ]
)
DEFAULT_CIPHERSUITES = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What ``tunnel check`` shows about one certificate."""

    path: str
    subject: str
    names: tuple[str, ...]
    key_type: str
    not_after: datetime.datetime

    def expires_in_days(self, now: datetime.datetime | None = None) -> float:
        """Days until the certificate expires (negative once it has)."""
        now = now or datetime.datetime.now(datetime.UTC)
        return (self.not_after - now).total_seconds() / 86400


def _refuse_password(*_args: object) -> str:
    # Without this, OpenSSL would prompt on the terminal for an encrypted key's passphrase.
    raise TLSSetupError("encrypted private keys are not supported")


def _setup_error(file: str, section: str, key: str, message: str, hint: str) -> TLSSetupError:
    return TLSSetupError(message, file=file, section=section, key=key, hint=hint)


def _check_readable(cert: CertFile, listener: ListenerConfig, file: str) -> None:
    for path in (cert.path, cert.key):
        if path is not None and not os.access(path, os.R_OK):
            which = "key" if path == cert.key and path != cert.path else cert.setting
            if os.path.exists(path):
                why, hint = "is not readable", "let the user running Tunnel read it"
            else:
                why, hint = (
                    "does not exist",
                    ("check the path (run 'tunnel gen-cert' for a demo certificate)"),
                )
            raise _setup_error(file, listener.name, which, f"{path} {why}", hint)


def _load_chain(
    ctx: ssl.SSLContext, listener: ListenerConfig, cert_file: CertFile, file: str
) -> None:
    cert, key_file = cert_file.path, cert_file.key
    try:
        ctx.load_cert_chain(cert, key_file, password=_refuse_password)
    except TLSSetupError as exc:
        raise _setup_error(
            file, listener.name, "key", f"{key_file or cert}: {exc.message}", "decrypt the key"
        ) from None
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        if "KEY_VALUES_MISMATCH" in reason.upper():
            message, hint = (
                f"{key_file or cert}: key does not match {cert}",
                "pair each cert with its key",
            )
        elif key_file is None:
            message = f"{cert}: no usable certificate and private key in it ({reason})"
            hint = "put the PEM certificate chain and key in the file, or set 'key'"
        else:
            message = f"{cert} / {key_file}: cannot load ({reason})"
            hint = "both must be PEM: certificate chain in 'cert', private key in 'key'"
        raise _setup_error(file, listener.name, cert_file.setting, message, hint) from None
    # Once client_auth has filled the trust store (_settings_context): a chain the file
    # lacks is built now rather than at every handshake (same certificates sent).
    with contextlib.suppress(_openssl.OpenSSLCallError):
        _openssl.build_chain_once(ctx)


def _apply_openssl(ctx: ssl.SSLContext, listener: ListenerConfig, file: str) -> None:
    suites = listener.ciphersuites or DEFAULT_CIPHERSUITES
    try:
        _openssl.set_ciphersuites(ctx, suites)
    except _openssl.OpenSSLCallError as exc:
        raise _setup_error(
            file, listener.name, "ciphersuites", str(exc), "use e.g. TLS_AES_128_GCM_SHA256"
        ) from None
    if listener.curves is None:
        return  # OpenSSL's own default groups: they grow with it (X448, P-521, ML-KEM hybrids)
    try:
        _openssl.set_groups(ctx, listener.curves)
    except _openssl.OpenSSLCallError as exc:
        raise _setup_error(
            file, listener.name, "curves", str(exc), "use e.g. X25519:P-256"
        ) from None


def _settings_context(
    listener: ListenerConfig, file: str, check: AllowListCheck | None, tickets: TicketStores
) -> ssl.SSLContext:
    """A server context with every listener setting except certificates."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _VERSIONS.get(listener.tls_min, ssl.TLSVersion.TLSv1_2)
    ctx.maximum_version = _VERSIONS.get(listener.tls_max, ssl.TLSVersion.TLSv1_3)
    ctx.options |= (
        ssl.OP_NO_COMPRESSION
        | ssl.OP_NO_RENEGOTIATION
        | ssl.OP_CIPHER_SERVER_PREFERENCE
        | ssl.OP_SINGLE_ECDH_USE
    )
    strict_eof(ctx)  # a truncated handshake is answered with an alert on every 3.11
    try:
        ctx.set_ciphers(listener.ciphers or DEFAULT_CIPHERS)
    except ssl.SSLError:
        raise _setup_error(
            file,
            listener.name,
            "ciphers",
            f"OpenSSL accepts none of the ciphers {listener.ciphers!r}",
            "use an OpenSSL cipher string, e.g. ECDHE-ECDSA-AES128-GCM-SHA256",
        ) from None
    _apply_openssl(ctx, listener, file)
    if listener.alpn:
        ctx.set_alpn_protocols(list(listener.alpn))
    client_auth(ctx, listener, file, check)
    if listener.keylog_file is not None:
        _keylog(ctx, listener, file)
    if listener.ticket_key_file is not None:
        _ticket_keys(listener, file, tickets).install(ctx)
    return ctx


_keylog_warned: set[str] = set()
TicketStores = dict[str, TicketKeys]  # by file path: one store per ticket key file


def _keylog(ctx: ssl.SSLContext, listener: ListenerConfig, file: str) -> None:
    path = listener.keylog_file
    assert path is not None
    try:
        set_keylog(ctx, path)
    except OSError as exc:
        raise _setup_error(
            file,
            listener.name,
            "keylog_file",
            f"cannot write {path}: {exc.strerror or exc}",
            "check the directory and permissions",
        ) from None
    if path not in _keylog_warned:
        _keylog_warned.add(path)
        log.warning(
            "[%s] keylog_file is on: the secrets of every TLS session are written to %s; "
            "anyone who can read it can decrypt the traffic. Turn it off after debugging.",
            listener.name,
            path,
        )


def _ticket_keys(listener: ListenerConfig, file: str, stores: TicketStores) -> TicketKeys:
    """The store of the listener's ticket key file: one per file, however many use it.

    ``stores`` may hold the previous generation's stores: a file still in use keeps its
    store (refreshed), so a file that broke since keeps serving the keys read before.
    """
    path = listener.ticket_key_file
    assert path is not None
    store = stores.get(path)
    if store is not None:
        store.refresh()
        return store
    try:
        store = TicketKeys(path)
    except TicketKeyError as exc:
        raise _setup_error(
            file, listener.name, "ticket_key_file", f"{path}: {exc}", "fix or replace the file"
        ) from None
    stores[path] = store
    return store


@dataclass(frozen=True, slots=True)
class ServerTLS:
    """A listener's contexts: the default one (first certificate group) and the SNI table."""

    default: ssl.SSLContext
    contexts: tuple[ssl.SSLContext, ...]
    groups: tuple[CertGroup, ...]
    table: NameTable[ssl.SSLContext]
    allow_check: AllowListCheck | None = None  # why a client certificate was refused


def build_server_tls(
    listener: ListenerConfig, file: str = "<config>", tickets: TicketStores | None = None
) -> ServerTLS:
    """Build one context per certificate group, all with the same settings.

    Every connection starts on the default context; the SNI callback switches it to the
    group serving the client's name. Session tickets stay valid across the switch:
    OpenSSL encrypts and decrypts them with the initial (default) context's keys.
    Ticket key stores are taken from (and added to) ``tickets``.
    """
    tickets = {} if tickets is None else tickets
    check = allow_list_check(listener)
    if listener.client:
        # Client mode: clients connect in plaintext; the context is never used.
        ctx = _settings_context(listener, file, check, tickets)
        return ServerTLS(ctx, (ctx,), (), NameTable())
    files = listener_cert_files(listener, file)
    for cert_file in files:
        _check_readable(cert_file, listener, file)
    groups = group_certificates(files, listener, file)
    contexts = []
    for group in groups:
        ctx = _settings_context(listener, file, check, tickets)
        for cert_file in group.files:
            _load_chain(ctx, listener, cert_file, file)
        contexts.append(ctx)
    table = build_name_table((g.names, ctx) for g, ctx in zip(groups, contexts, strict=True))
    default = contexts[0]
    default.sni_callback = make_sni_callback(table, default, strict=listener.sni_strict)
    if listener.acme and listener.acme_state_dir:
        from tunnel.tls.acme.challenge import AlpnChallenges  # loads with acme names only

        challenges = AlpnChallenges(listener.acme, listener.acme_state_dir)
        challenges.install(default, default.sni_callback)
    return ServerTLS(default, tuple(contexts), tuple(groups), table, check)


class SNISelector:
    """The SNI callback: remember the name, switch to its group's context (or refuse it).

    A class rather than a closure so that the compiled data plane can read the table and
    do the same selection in C (tunnel.dataplane.fastplane).
    """

    __slots__ = ("_lookup", "_refuse", "default", "strict", "table")

    def __init__(self, table: NameTable[ssl.SSLContext], default: ssl.SSLContext, strict: bool):
        self.table = table
        self.default = default
        self.strict = strict
        self._lookup = table.lookup
        self._refuse = ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME if strict else None

    def __call__(self, sslobj: Any, name: str | None, _ctx: ssl.SSLContext) -> int | None:
        # The SSLObject has no __slots__: remember the client's server name on it.
        sslobj.sni = name
        if name is None:
            return None
        chosen = self._lookup(name)
        if chosen is None:
            if self._refuse is not None:
                sslobj.sni_refused = True  # see sni_refused()
            return self._refuse
        if chosen is not self.default:
            sslobj.context = chosen
        return None


def make_sni_callback(
    table: NameTable[ssl.SSLContext], default: ssl.SSLContext, *, strict: bool
) -> Callable[[Any, str | None, ssl.SSLContext], int | None]:
    """The SNI callback of a listener's default context (see :class:`SNISelector`)."""
    return SNISelector(table, default, strict)


def sni_refused(sslobj: ssl.SSLObject) -> bool:
    """True if the handshake failed because ``sni_strict`` refused the client's name."""
    return bool(getattr(sslobj, "sni_refused", False))


def build_server_context(listener: ListenerConfig, file: str = "<config>") -> ssl.SSLContext:
    """The listener's default context (SNI selection wired in); raise TLSSetupError."""
    return build_server_tls(listener, file).default


def describe_certificates(listener: ListenerConfig) -> list[CertInfo]:
    """Read each certificate file of a listener (first certificate = the leaf)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    infos = []
    for path in [cert_file.path for cert_file in listener_cert_files(listener, "<config>")]:
        with open(path, "rb") as f:
            cert = first_pem_certificate(f.read())
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            names = tuple(san.value.get_values_for_type(x509.DNSName)) + tuple(
                str(ip) for ip in san.value.get_values_for_type(x509.IPAddress)
            )
        except x509.ExtensionNotFound:
            names = ()
        key = cert.public_key()
        if isinstance(key, ec.EllipticCurvePublicKey):
            key_type = f"ECDSA {key.curve.name}"
        elif isinstance(key, rsa.RSAPublicKey):
            key_type = f"RSA {key.key_size}"
        else:
            key_type = type(key).__name__
        infos.append(
            CertInfo(path, cert.subject.rfc4514_string(), names, key_type, not_after(cert))
        )
    return infos
