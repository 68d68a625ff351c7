"""Fixtures of the integration tests: the shared harness's (``tests/harness/``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness.certs import Certs
from harness.fixtures import session_certs, start_backend, start_tunnel, unreachable

__all__ = ["ca_file", "session_certs", "start_backend", "start_tunnel", "unreachable"]


@pytest.fixture
def ca_file(certs: Certs, tmp_path: Path) -> Path:
    """The CA of the test backends' certificates, as a file for a backend's ``ca =``."""
    path = tmp_path / "backend-ca.pem"
    certs.ca.cert_pem.write_to_path(str(path))
    return path
