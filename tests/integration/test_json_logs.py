"""log_format = json: one object per line; the connection summary's fields are keys."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .harness import BackendFactory, Certs, TunnelFactory, echo_handler, recv_exactly, wait_until

pytestmark = pytest.mark.timeout(60)


def test_json_connection_summary(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    backend = start_backend(echo_handler)
    tunnel = start_tunnel(backend.address, tunnel={"log_format": "json"})
    with tunnel.connect(certs.client_context("1.3")) as sock:
        port = sock.getsockname()[1]
        sock.sendall(b"hello")
        assert recv_exactly(sock.recv, 5) == b"hello"
        sock.unwrap()

    def conn_entry() -> dict[str, Any] | None:
        for line in tunnel.log().splitlines():
            entry = json.loads(line)  # every line is one JSON object
            if entry.get("event") == "conn":
                return dict(entry)
        return None

    entry = wait_until(conn_entry, what="a JSON connection summary")
    assert entry["peer"] == f"127.0.0.1:{port}"
    assert entry["listener"] == "test" and entry["tls"] == "TLSv1.3"
    assert entry["in"] == 5 and entry["out"] == 5 and entry["reason"] == "done"
    assert entry["backend"] == backend.address
    assert entry["level"] == "info" and "uid" not in entry
