"""HTTP-01 (RFC 8555 section 8.3): a tiny responder for ``/.well-known/acme-challenge/``.

It answers with the key authorization the ACME process published in the state directory
(so every instance sharing it answers) and 404 to anything else. It runs in a thread of
the ACME process, on a socket the supervisor bound before dropping privileges.
"""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from tunnel.config.acme import AcmeSettings
from tunnel.tls.acme.store import StateDir

log = logging.getLogger("tunnel.acme")

CHALLENGE_PREFIX = "/.well-known/acme-challenge/"


class _ChallengeHandler(BaseHTTPRequestHandler):
    """HTTP-01: the key authorization under /.well-known/acme-challenge/, 404 elsewhere."""

    state: StateDir
    server_version = "tunnel"

    def do_GET(self) -> None:
        body = self._lookup()
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _lookup(self) -> bytes | None:
        if not self.path.startswith(CHALLENGE_PREFIX):
            return None
        path = self.state.http_challenge(self.path[len(CHALLENGE_PREFIX) :])
        if path is None:
            return None
        try:
            with open(path, "rb") as stream:
                return stream.read()
        except OSError:
            return None

    def log_message(self, format: str, *args: object) -> None:
        log.info("http-01 responder: %s %s", self.address_string(), format % args)


def serve_http01(sock: socket.socket, state: StateDir) -> HTTPServer:
    """Answer HTTP-01 challenges on the bound ``sock`` from a daemon thread."""
    handler = type("Handler", (_ChallengeHandler,), {"state": state})
    server = HTTPServer(sock.getsockname()[:2], handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    threading.Thread(target=server.serve_forever, name="http-01", daemon=True).start()
    return server


def bind_http01(settings: AcmeSettings) -> socket.socket:
    """The HTTP-01 responder's listening socket on every interface (bound as root)."""
    if socket.has_dualstack_ipv6():
        return socket.create_server(
            ("", settings.http_port), family=socket.AF_INET6, dualstack_ipv6=True, reuse_port=True
        )
    # reuse_port: instances of a fleet on one machine all answer from the shared state_dir.
    return socket.create_server(("", settings.http_port), reuse_port=True)
