"""Pure: just enough DER to read a certificate's DNS names and expiry date.

The supervisor needs these two facts of every leaf certificate (names to group
certificates for SNI, the expiry date for the metrics) and nothing else. Reading them
here keeps ``cryptography`` (several MB and ~70 modules) out of the serving processes;
``tunnel check``, which shows more, still uses it. OpenSSL itself validates every
certificate when it is loaded into a context, so this reader only has to be safe: every
length is checked against its enclosing element, and anything it does not expect is a
``ValueError``.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Iterator
from dataclasses import dataclass

_SEQUENCE = 0x30
_VERSION = 0xA0  # [0] EXPLICIT, before the serial number
_EXTENSIONS = 0xA3  # [3] EXPLICIT, after the subject's public key
_OID = 0x06
_OCTETS = 0x04
_DNS_NAME = 0x82  # GeneralName dNSName: [2] IMPLICIT IA5String
_UTC_TIME = 0x17
_GENERALIZED_TIME = 0x18
_SUBJECT_ALT_NAME = bytes([0x55, 0x1D, 0x11])  # 2.5.29.17
_PEM_BEGIN = b"-----BEGIN CERTIFICATE-----"
_PEM_END = b"-----END CERTIFICATE-----"
_TIME_FIELDS = ((0, 4), (4, 2), (6, 2), (8, 2), (10, 2), (12, 2))  # YYYYMMDDHHMMSS

Element = tuple[int, int, int]  # tag, start of the content, end of the content


@dataclass(frozen=True, slots=True)
class Leaf:
    """What the supervisor reads from a certificate."""

    dns_names: tuple[str, ...]  # subjectAltName dNSName entries, in order, as written
    not_after: datetime.datetime  # aware, UTC


def first_pem_certificate(pem: bytes) -> bytes:
    """The DER bytes of the first ``CERTIFICATE`` block of a PEM text (ValueError if none)."""
    start = pem.find(_PEM_BEGIN)
    end = pem.find(_PEM_END, start + 1)
    if start < 0 or end < 0:
        raise ValueError("no PEM certificate found")
    body = b"".join(pem[start + len(_PEM_BEGIN) : end].split())
    return base64.b64decode(body, validate=True)  # binascii.Error is a ValueError


def read_leaf(path: str) -> Leaf:
    """The first certificate of a PEM file; OSError if unreadable, ValueError if malformed."""
    with open(path, "rb") as stream:
        return parse_certificate(first_pem_certificate(stream.read()))


def parse_certificate(der: bytes) -> Leaf:
    """DNS names and notAfter of a DER X.509 certificate (ValueError if it is not one)."""
    tag, start, end = _element(der, 0, len(der))
    if tag != _SEQUENCE:
        raise ValueError("not a certificate: no outer SEQUENCE")
    tbs_tag, tbs_start, tbs_end = _element(der, start, end)
    if tbs_tag != _SEQUENCE:
        raise ValueError("not a certificate: no TBSCertificate")
    fields = list(_children(der, tbs_start, tbs_end))
    if fields and fields[0][0] == _VERSION:
        fields = fields[1:]
    # serial, signature algorithm, issuer, validity, subject, public key, then optionals
    if len(fields) < 6 or fields[3][0] != _SEQUENCE:
        raise ValueError("not a certificate: TBSCertificate too short")
    validity = list(_children(der, fields[3][1], fields[3][2]))
    if len(validity) != 2:
        raise ValueError("bad validity: expected notBefore and notAfter")
    not_after = _time(der, validity[1])
    names: tuple[str, ...] = ()
    for tag, ext_start, ext_end in fields[6:]:
        if tag == _EXTENSIONS:
            names = _san_dns_names(der, ext_start, ext_end)
    return Leaf(names, not_after)


def _element(data: bytes, pos: int, limit: int) -> Element:
    """The element at ``pos``, which must end by ``limit`` (ValueError otherwise)."""
    if pos + 2 > limit:
        raise ValueError("truncated DER element")
    tag, length = data[pos], data[pos + 1]
    if tag & 0x1F == 0x1F:
        raise ValueError("multi-byte DER tags do not occur in certificates")
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 4 or pos + count > limit:
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > limit:
        raise ValueError("DER element longer than what contains it")
    return tag, pos, pos + length


def _children(data: bytes, start: int, end: int) -> Iterator[Element]:
    pos = start
    while pos < end:
        element = _element(data, pos, end)
        yield element
        pos = element[2]


def _time(data: bytes, element: Element) -> datetime.datetime:
    tag, start, end = element
    text = data[start:end].decode("ascii")  # UnicodeDecodeError is a ValueError
    if tag == _UTC_TIME and len(text) == 13:
        # RFC 5280: two-digit years 50-99 are 19xx, 00-49 are 20xx.
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != _GENERALIZED_TIME or len(text) != 15:
        raise ValueError("bad certificate time: expected UTCTime or GeneralizedTime in Z")
    if not text.endswith("Z") or not text[:-1].isdigit():
        raise ValueError("bad certificate time")
    # Not strptime: it imports _strptime, locale and calendar into the supervisor.
    y, mo, d, h, mi, s = (int(text[i : i + n]) for i, n in _TIME_FIELDS)
    return datetime.datetime(y, mo, d, h, mi, s, tzinfo=datetime.UTC)


def _san_dns_names(data: bytes, start: int, end: int) -> tuple[str, ...]:
    """The dNSName entries of the subjectAltName in an ``[3] Extensions`` element."""
    tag, seq_start, seq_end = _element(data, start, end)
    if tag != _SEQUENCE:
        raise ValueError("bad extensions: expected a SEQUENCE")
    for ext_tag, ext_start, ext_end in _children(data, seq_start, seq_end):
        parts = list(_children(data, ext_start, ext_end)) if ext_tag == _SEQUENCE else []
        if len(parts) < 2 or parts[0][0] != _OID or parts[-1][0] != _OCTETS:
            raise ValueError("bad extension")
        if data[parts[0][1] : parts[0][2]] != _SUBJECT_ALT_NAME:
            continue
        _, value_start, value_end = parts[-1]
        names_tag, names_start, names_end = _element(data, value_start, value_end)
        if names_tag != _SEQUENCE:
            raise ValueError("bad subjectAltName: expected a SEQUENCE")
        return tuple(
            data[s:e].decode("ascii")
            for name_tag, s, e in _children(data, names_start, names_end)
            if name_tag == _DNS_NAME
        )
    return ()
