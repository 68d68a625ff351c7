"""Why a connection ended, and why a handshake failed: the closed sets of label values.

The data plane picks a :class:`CloseReason` (and, for a failed handshake, a
:class:`HandshakeFailure`) where the event happens; the connection's log line shows the
reason's text plus a free-text detail, and the metrics use the enum values as labels as
they are, so no label is ever derived from free text. The values are the label values
operators already see (``tunnel_connections_closed_total{reason="done"}``,
``tunnel_handshakes_total{result="unknown_sni"}``).
"""

from __future__ import annotations

import enum


class HandshakeFailure(enum.Enum):
    """Why a TLS handshake with a client failed (the ``result`` label of handshakes)."""

    TIMEOUT = "timeout"
    UNKNOWN_SNI = "unknown_sni"
    NO_SHARED_CIPHER = "no_shared_cipher"
    BAD_CLIENT_CERT = "bad_client_cert"
    NOT_TLS = "not_tls"
    UNSUPPORTED_VERSION = "unsupported_version"
    CLIENT_CLOSED = "client_closed"
    DENIED = "denied"  # refused by policy before the handshake (deny_ja4)
    BAD_CLIENT_HELLO = "bad_client_hello"  # a ClientHello Tunnel could not read
    OTHER = "other"


class CloseReason(enum.Enum):
    """Why a client connection ended (the ``reason`` label of closed connections)."""

    DONE = "done"  # both directions ended normally
    CLIENT_CLOSED = "client closed"  # the client ended first; the backend had not
    CLIENT_ERROR = "client error"  # the client's socket failed (e.g. reset)
    CLIENT_TLS_ERROR = "TLS error from client"  # a bad record after the handshake
    TLS_ERROR = "TLS error"  # encrypting towards the client failed
    HANDSHAKE_TIMEOUT = "handshake timeout"
    HANDSHAKE_FAILED = "handshake failed"
    DENIED = "denied"  # refused by policy (deny_ja4) before the handshake
    CLOSED_IN_HANDSHAKE = "client closed during handshake"
    BACKEND_UNREACHABLE = "backend unreachable"  # every address failed
    BACKEND_CLOSED = "backend closed"  # the backend closed before the client was done
    BACKEND_ERROR = "backend error"  # the backend's socket failed
    BACKEND_TLS_ERROR = "backend TLS error"
    IDLE_TIMEOUT = "idle timeout"
    SHUTDOWN = "shutdown"  # drained or stopped by the worker
    PROXY_ERROR = "proxy header error"
    PROXY_TIMEOUT = "proxy header timeout"
    PROXY_UNTRUSTED = "proxy untrusted source"
    ACME_CHALLENGE = "acme challenge answered"  # a TLS-ALPN-01 validation: handshake only
    RATE_LIMITED = "rate limited"  # over a per-IP rate (proxy_from: after the header)
    IP_LIMITED = "per-IP limit"  # over max_*_per_ip (logged with proxy_from: after the header)
    CLOSED = "closed"  # gone without any of the above (should not happen)

    @property
    def handshake_failure(self) -> HandshakeFailure | None:
        """The handshake result this reason implies by itself, if it ends a handshake."""
        return _IMPLIED.get(self)

    def text(self, detail: str = "") -> str:
        """The reason as the connection's log line shows it: ``value: detail``."""
        return f"{self.value}: {detail}" if detail else self.value


# Reasons that can only end a connection whose handshake did not complete.
_IMPLIED = {
    CloseReason.HANDSHAKE_TIMEOUT: HandshakeFailure.TIMEOUT,
    CloseReason.HANDSHAKE_FAILED: HandshakeFailure.OTHER,
    CloseReason.CLOSED_IN_HANDSHAKE: HandshakeFailure.CLIENT_CLOSED,
    CloseReason.DENIED: HandshakeFailure.DENIED,
}
