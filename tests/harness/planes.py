"""Which data plane a test's tunnel runs on: for tests that must exercise the compiled one.

CI runs the integration suite twice: on the default, compiled plane and with
``TUNNEL_DATAPLANE=python``. A feature test calls :func:`expect_plane` so that its compiled
run fails if the listener fell back to the Python plane instead of silently testing that
one twice.
"""

from __future__ import annotations

import os

from harness.process import TunnelProcess
from harness.waits import wait_until


def compiled_run() -> bool:
    """True unless this test run asks for the Python data plane (the compiled one is the
    default; where it is not built, the compiled run's checks fail, as they should)."""
    return os.environ.get("TUNNEL_DATAPLANE", "").strip().lower() != "python"


def expect_plane(tunnel: TunnelProcess, listener: str = "test") -> None:
    """On a compiled run, ``listener`` must say it is served by the compiled data plane."""
    line = f"listener {listener}: "
    wait_until(lambda: line in tunnel.log() and "data plane" in tunnel.log(), what="plane line")
    if compiled_run():
        assert f"{line}compiled data plane" in tunnel.log(), tunnel.log()
