"""Pure: what a connection tells its backend in the PROXY header, as bytes.

:func:`build_header` turns plain values (addresses, TLS facts, an optional client
certificate summary, options from the listener) into a v1 or v2 header. It does no I/O
and knows no ``ssl`` objects, so every combination is unit-tested byte by byte;
``connection.py`` only collects the values once per connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tunnel.wire import proxy_protocol as pp

# A balancer's TLV is not passed on when we send one of the same type ourselves, and
# its CRC32C (which covered *its* header) or padding never is.
_NEVER_KEPT = frozenset({pp.PP2_TYPE_CRC32C, pp.PP2_TYPE_NOOP})


@dataclass(frozen=True, slots=True)
class ClientCert:
    """What the PP2_TYPE_SSL TLV says about a client certificate (all fields optional).

    ``verify`` is the OpenSSL verify result (0 = verified); ``this_connection`` is false
    when the certificate came with a resumed session rather than this handshake.
    """

    cn: str | None = None
    sig_alg: str | None = None
    key_alg: str | None = None
    verify: int = 0
    this_connection: bool = True
    der: bytes | None = None


@dataclass(frozen=True, slots=True)
class ProxyOptions:
    """A listener's PROXY-out settings."""

    version: str  # "v1" | "v2"
    crc32c: bool = False
    unique_id: bool = False
    cert_tlv: int = 0  # 0 = do not send the DER client certificate
    keep_tlvs: bool = False
    ja4_tlv: int = 0  # 0 = do not send the client's JA4 fingerprint
    group_tlv: int = 0  # 0 = do not send the negotiated key exchange group


@dataclass(frozen=True, slots=True)
class TLSFacts:
    """The negotiated TLS parameters of one client connection."""

    version: str | None = None
    cipher: str | None = None
    alpn: str | None = None
    sni: str | None = None
    ja4: str | None = None
    group: str | None = None  # the negotiated key exchange group, e.g. "X25519MLKEM768"
    # False for a passed-through connection: Tunnel saw only the ClientHello, so it sends
    # no SSL TLV (the backend terminates TLS and knows more than Tunnel).
    terminated: bool = True


def ssl_value(facts: TLSFacts, cert: ClientCert | None) -> tuple[int, bytes]:
    """The PP2_TYPE_SSL TLV: flags, verify result and sub-TLVs for the known fields."""
    flags = pp.PP2_CLIENT_SSL
    verify = 0
    cn = sig_alg = key_alg = None
    if cert is not None:
        flags |= pp.PP2_CLIENT_CERT_SESS
        if cert.this_connection:
            flags |= pp.PP2_CLIENT_CERT_CONN
        verify, cn, sig_alg, key_alg = cert.verify, cert.cn, cert.sig_alg, cert.key_alg
    return pp.ssl_tlv(
        client_flags=flags,
        verify=verify,
        version=facts.version,
        cn=cn,
        cipher=facts.cipher,
        sig_alg=sig_alg,
        key_alg=key_alg,
    )


def build_header(
    options: ProxyOptions,
    src: pp.InetAddr | None,
    dst: pp.InetAddr | None,
    facts: TLSFacts,
    *,
    cert: ClientCert | None = None,
    unique_id: bytes | None = None,
    balancer_tlvs: Sequence[tuple[int, bytes]] = (),
) -> bytes:
    """The PROXY header for one connection.

    ``src``/``dst`` are TCP endpoints, or ``None`` when the client is not on TCP (e.g.
    a Unix socket): the header then says UNKNOWN (v1) or AF_UNSPEC (v2), as the
    specification asks. ``unique_id`` is sent when ``options.unique_id`` is set.
    """
    if src is None or dst is None:
        src = dst = None
    if options.version == "v1":
        return pp.encode_v1(src, dst)
    tlvs: list[tuple[int, bytes]] = []
    if facts.alpn:
        tlvs.append((pp.PP2_TYPE_ALPN, facts.alpn.encode()))
    if facts.sni:
        tlvs.append((pp.PP2_TYPE_AUTHORITY, facts.sni.encode()))
    if options.unique_id and unique_id:
        tlvs.append((pp.PP2_TYPE_UNIQUE_ID, unique_id))
    if facts.terminated:
        tlvs.append(ssl_value(facts, cert))
    if options.ja4_tlv and facts.ja4:
        tlvs.append((options.ja4_tlv, facts.ja4.encode("ascii")))
    if options.group_tlv and facts.group:
        tlvs.append((options.group_tlv, facts.group.encode("ascii")))
    if options.cert_tlv and cert is not None and cert.der:
        tlvs.append((options.cert_tlv, cert.der))
    if options.keep_tlvs:
        ours = {t for t, _ in tlvs}
        tlvs.extend((t, v) for t, v in balancer_tlvs if t not in ours and t not in _NEVER_KEPT)
    return pp.encode_v2(src, dst, tlvs, crc32c=options.crc32c)
