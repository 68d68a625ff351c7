"""Fixtures of the integration tests: the shared harness's (``tests/harness/``)."""

from __future__ import annotations

from harness.fixtures import session_certs, start_backend, start_tunnel, unreachable

__all__ = ["session_certs", "start_backend", "start_tunnel", "unreachable"]
