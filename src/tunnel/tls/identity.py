"""Pure: a client certificate's identity, and the listener's allow-lists on it.

A client passes when no allow-list is set, or when its subject CN is in ``allow_cn``, or
one of its DNS subjectAltNames is in ``allow_dns`` (case-insensitive), or one of its URI
subjectAltNames is in ``allow_uri``: the lists are alternatives, not all required.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """What the allow-lists look at."""

    cn: str | None
    dns: tuple[str, ...] = ()
    uris: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AllowLists:
    """A listener's ``allow_cn``, ``allow_dns`` and ``allow_uri``."""

    cn: frozenset[str] = frozenset()
    dns: frozenset[str] = frozenset()
    uri: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.cn or self.dns or self.uri)


def identity_from_der(der: bytes) -> ClientIdentity:
    """Subject CN and DNS/URI SANs of a DER certificate (ValueError if it is not one)."""
    # Imported here: only listeners with allow-lists need it (see clients.preload_x509).
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_der_x509_certificate(der)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(cns[0].value) if cns else None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ClientIdentity(cn)
    dns = tuple(name.lower() for name in san.get_values_for_type(x509.DNSName))
    uris = tuple(san.get_values_for_type(x509.UniformResourceIdentifier))
    return ClientIdentity(cn, dns, uris)


def rejection(identity: ClientIdentity, allow: AllowLists) -> str | None:
    """None if the client may connect, else why not (for the log)."""
    if not allow:
        return None
    if identity.cn is not None and identity.cn in allow.cn:
        return None
    if any(name in allow.dns for name in identity.dns):
        return None
    if any(uri in allow.uri for uri in identity.uris):
        return None
    shown = [f"CN={identity.cn or '-'}"]
    shown += [f"DNS:{name}" for name in identity.dns[:3]]
    shown += [f"URI:{uri}" for uri in identity.uris[:3]]
    return "client certificate not allowed (" + ", ".join(shown) + ")"


class AllowListCheck:
    """One listener's allow-list check, run by OpenSSL on each verified client leaf.

    OpenSSL only learns "rejected"; why (which names the certificate had) is kept here for
    the connection whose handshake then fails to :meth:`take` it. A worker runs one
    handshake step at a time, so the reason taken after a failed step is that handshake's.
    Built with the listener's contexts by the supervisor and handed to the workers with
    them (each worker has its own copy after the fork).
    """

    __slots__ = ("_last", "allow")

    def __init__(self, allow: AllowLists) -> None:
        self.allow = allow
        self._last: str | None = None

    def __call__(self, der: bytes) -> bool:
        """True if the client with this DER leaf certificate may connect."""
        reason = rejection(identity_from_der(der), self.allow)
        if reason is None:
            return True
        self._last = reason
        return False

    def take(self) -> str | None:
        """Why the last certificate was refused, once (None if none was since)."""
        reason, self._last = self._last, None
        return reason
