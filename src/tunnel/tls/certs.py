"""Certificate files of a listener: which files, which names each serves, how they group.

A listener's certificates come from ``cert`` (in order) and then from ``cert_dir`` (its
``*.pem`` files, sorted by name). Certificates whose leaves carry the same set of DNS
names form one *group*: one ``SSLContext`` serves a group, so an ECDSA and an RSA
certificate for the same names are offered together and OpenSSL picks by what the client
supports. The first group is the listener's default (served without SNI or for an
unknown name).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

from tunnel.config import ListenerConfig
from tunnel.errors import TLSSetupError
from tunnel.tls.der import Leaf, read_leaf

CERT_DIR_SUFFIXES = (".pem", ".crt")


@dataclass(frozen=True, slots=True)
class CertFile:
    """One certificate chain file (its key inside, or in ``key``) and the key it came from."""

    path: str
    key: str | None
    setting: str  # the config key that named it: cert or cert_dir


@dataclass(frozen=True, slots=True)
class CertGroup:
    """Certificates serving the same DNS names (e.g. an ECDSA and an RSA one)."""

    names: tuple[str, ...]
    files: tuple[CertFile, ...]


def listener_cert_files(listener: ListenerConfig, file: str) -> list[CertFile]:
    """The listener's certificate files: ``cert`` entries, then ``cert_dir``'s PEM files."""
    result = [CertFile(path, listener.key, "cert") for path in listener.cert]
    if listener.cert_dir is not None:
        directory = listener.cert_dir
        try:
            entries = sorted(os.listdir(directory))
        except OSError as exc:
            raise TLSSetupError(
                f"cannot read directory {directory}: {exc.strerror or exc}",
                file=file,
                section=listener.name,
                key="cert_dir",
                hint="check the path and permissions",
            ) from None
        found = [
            CertFile(os.path.join(directory, entry), None, "cert_dir")
            for entry in entries
            if entry.endswith(CERT_DIR_SUFFIXES) and not entry.startswith(".")
        ]
        if not found:
            raise TLSSetupError(
                f"{directory} holds no certificate (*.pem or *.crt) files",
                file=file,
                section=listener.name,
                key="cert_dir",
                hint="put one PEM file per certificate there: chain first, then its key",
            )
        result += found
    if listener.acme and listener.acme_state_dir:
        # Last, so that cert and cert_dir files win for the names they cover.
        from tunnel.tls.acme.served import served_cert  # ACME code loads with acme names only

        result.append(CertFile(served_cert(listener.acme, listener.acme_state_dir), None, "acme"))
    return result


def dns_names(leaf: Leaf) -> tuple[str, ...]:
    """The DNS names of a certificate's subjectAltName, lower-cased, in order."""
    return tuple(name.lower() for name in leaf.dns_names)


def expiry_dates(listener: ListenerConfig) -> list[tuple[str, datetime.datetime]]:
    """(path, notAfter) of each certificate file of a listener (first certificate = leaf)."""
    files = listener_cert_files(listener, "<config>")
    return [(cert_file.path, read_leaf(cert_file.path).not_after) for cert_file in files]


def group_certificates(
    files: list[CertFile], listener: ListenerConfig, file: str
) -> list[CertGroup]:
    """Group certificate files by their leaves' DNS name sets, in first-seen order."""
    groups: dict[frozenset[str], tuple[tuple[str, ...], list[CertFile]]] = {}
    for cert_file in files:
        try:
            names = dns_names(read_leaf(cert_file.path))
        except (OSError, ValueError) as exc:
            raise TLSSetupError(
                f"{cert_file.path}: cannot read the certificate ({exc})",
                file=file,
                section=listener.name,
                key=cert_file.setting,
                hint="the file must start with a PEM certificate",
            ) from None
        groups.setdefault(frozenset(names), (names, []))[1].append(cert_file)
    return [CertGroup(names, tuple(members)) for names, members in groups.values()]
