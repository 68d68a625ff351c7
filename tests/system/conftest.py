"""Fixtures and names of the system tests: the shared harness's (``tests/harness/``).

Tests here run ``tunnel`` as a user would (``python -m tunnel ...``) through the
``tunnel`` fixture; every process it starts is stopped by PID at teardown.
"""

from __future__ import annotations

from harness.backends import SocketBackend as Backend
from harness.backends import hello_handler, read_request
from harness.certs import Certs, write_certs
from harness.config import write_config
from harness.fixtures import (
    backend_factory,
    ca,
    fresh_certs,
    hello_backend,
    home,
    public_certs,
    public_dir,
    start_backend,
    tunnel,
)
from harness.net import port_accepts, reserve_port
from harness.procfs import alive
from harness.procfs import children as children_of
from harness.tunnel import REPO, SRC, Launcher, Proc, Running, base_env, start_run
from harness.waits import DEADLINE, POLL, wait_for

# A port nobody else can take while the session runs (see harness.net.reserve_port).
free_port = reserve_port

__all__ = [
    "DEADLINE",
    "POLL",
    "REPO",
    "SRC",
    "Backend",
    "Certs",
    "Launcher",
    "Proc",
    "Running",
    "alive",
    "backend_factory",
    "base_env",
    "ca",
    "children_of",
    "free_port",
    "fresh_certs",
    "hello_backend",
    "hello_handler",
    "home",
    "port_accepts",
    "public_certs",
    "public_dir",
    "read_request",
    "reserve_port",
    "start_backend",
    "start_run",
    "tunnel",
    "wait_for",
    "write_certs",
    "write_config",
]
