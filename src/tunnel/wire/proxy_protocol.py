"""PROXY protocol v1 and v2 (HAProxy ``proxy-protocol.txt``): encode and decode.

Theory of operation
-------------------
This module is the public face of three: :mod:`~tunnel.wire.proxy_header` (constants,
:class:`ProxyHeader`, TLVs), :mod:`~tunnel.wire.proxy_encode` and
:mod:`~tunnel.wire.proxy_decode`. None does I/O.  The *encoders* (:func:`encode_v1`,
:func:`encode_v2`, :func:`ssl_tlv`) turn addresses and TLVs into header bytes to send to a backend.
The *decoder* (:class:`ProxyDecoder`) is a small state machine fed with whatever
bytes arrive from a client, split in any way:

1. **detect** -- the first bytes must be a prefix of the v1 signature ``"PROXY "``
   or of the 12-byte v2 signature; anything else fails on the first byte that
   disagrees with both, so garbage is never buffered.
2. **v1** -- buffer until LF; the line (CRLF included) may be at most 107 bytes,
   and bare CR/LF, double spaces, bad addresses or ports are rejected.
3. **v2** -- once the 16-byte fixed part is in, version, command, family and
   length are checked (length against ``max_size`` and the family's address
   size) *before* the rest is buffered; then addresses and TLVs are parsed and
   a CRC32C TLV, if any, is verified.

``feed`` returns :data:`NEED_DATA` until the header is complete, then the
:class:`ProxyHeader`; bytes received after the header (e.g. a TLS ClientHello)
are kept in :attr:`ProxyDecoder.rest`.  While waiting, the buffer never holds
more than the header can be long.  Any malformed input raises
:class:`ProxyProtocolError` (a :class:`ValueError`: the sender's fault), and only that.
"""

from tunnel.wire.proxy_decode import ProxyDecoder, decode
from tunnel.wire.proxy_encode import encode_v1, encode_v2, ssl_tlv
from tunnel.wire.proxy_header import (
    NEED_DATA,
    PP2_CLIENT_CERT_CONN,
    PP2_CLIENT_CERT_SESS,
    PP2_CLIENT_SSL,
    PP2_SUBTYPE_SSL_CIPHER,
    PP2_SUBTYPE_SSL_CN,
    PP2_SUBTYPE_SSL_KEY_ALG,
    PP2_SUBTYPE_SSL_SIG_ALG,
    PP2_SUBTYPE_SSL_VERSION,
    PP2_TYPE_ALPN,
    PP2_TYPE_AUTHORITY,
    PP2_TYPE_CRC32C,
    PP2_TYPE_NETNS,
    PP2_TYPE_NOOP,
    PP2_TYPE_SSL,
    PP2_TYPE_UNIQUE_ID,
    V1_MAX_LENGTH,
    V1_SIGNATURE,
    V2_SIGNATURE,
    FeedResult,
    InetAddr,
    IPAddr,
    ProxyHeader,
    ProxyProtocolError,
    SSLInfo,
    crc32c,
)

__all__ = [
    "NEED_DATA",
    "PP2_CLIENT_CERT_CONN",
    "PP2_CLIENT_CERT_SESS",
    "PP2_CLIENT_SSL",
    "PP2_SUBTYPE_SSL_CIPHER",
    "PP2_SUBTYPE_SSL_CN",
    "PP2_SUBTYPE_SSL_KEY_ALG",
    "PP2_SUBTYPE_SSL_SIG_ALG",
    "PP2_SUBTYPE_SSL_VERSION",
    "PP2_TYPE_ALPN",
    "PP2_TYPE_AUTHORITY",
    "PP2_TYPE_CRC32C",
    "PP2_TYPE_NETNS",
    "PP2_TYPE_NOOP",
    "PP2_TYPE_SSL",
    "PP2_TYPE_UNIQUE_ID",
    "V1_MAX_LENGTH",
    "V1_SIGNATURE",
    "V2_SIGNATURE",
    "FeedResult",
    "IPAddr",
    "InetAddr",
    "ProxyDecoder",
    "ProxyHeader",
    "ProxyProtocolError",
    "SSLInfo",
    "crc32c",
    "decode",
    "encode_v1",
    "encode_v2",
    "ssl_tlv",
]
