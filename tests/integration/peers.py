"""The integration tests' names for :mod:`harness.peers` (nginx and HAProxy peers)."""

from __future__ import annotations

from harness.peers import (
    HAPROXY,
    NGINX,
    haproxy_proxy_backend,
    haproxy_sender,
    needs_haproxy,
    needs_nginx,
    nginx_proxy_backend,
)

__all__ = [
    "HAPROXY",
    "NGINX",
    "haproxy_proxy_backend",
    "haproxy_sender",
    "needs_haproxy",
    "needs_nginx",
    "nginx_proxy_backend",
]
