"""The real serving processes import only what serving needs (issue 12, "small footprint").

``TUNNEL_DEBUG_MODULES=DIR`` makes the supervisor and every worker write their
``sys.modules`` once serving (see ``tunnel.observe.modules``). Certificate parsing,
metrics rendering and the demo must not be among them; the certificate expiry that
``/metrics`` reports is still right (read by ``tunnel.tls.der``).
"""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509

from .conftest import Backend, Certs, Launcher, start_run, wait_for

pytestmark = pytest.mark.timeout(60)

FORBIDDEN = ("cryptography", "prometheus_client", "tunnel.cli.demo", "tunnel.cli.status", "dns")


def test_supervisor_and_workers_import_only_what_serving_needs(
    tunnel: Launcher, tmp_path: Path, certs: Certs, hello_backend: Backend
) -> None:
    dump = tmp_path / "modules"
    dump.mkdir()
    tunnel.env["TUNNEL_DEBUG_MODULES"] = str(dump)
    running = start_run(tunnel, tmp_path, certs, hello_backend, workers="2", admin="127.0.0.1:0")
    admin = running.proc.admin_port()  # admin says port 0
    wait_for("3 module lists", lambda: len(list(dump.glob("*.modules"))) == 3)
    roles = sorted(path.name.split("-")[0] for path in dump.glob("*.modules"))
    assert roles == ["supervisor", "worker", "worker"]
    workers = {str(pid) for pid in running.proc.worker_pids()}
    for path in dump.glob("*.modules"):
        if path.name.startswith("worker"):
            assert path.stem.split("-")[1] in workers
        modules = path.read_text().split()
        assert "tunnel.dataplane.worker" in modules
        bad = [m for m in modules if m.split(".")[0] in FORBIDDEN or m in FORBIDDEN]
        assert bad == [], f"{path.name} imports {bad}"

    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    leaf = x509.load_pem_x509_certificate(certs.cert_pem.read_bytes())
    found = re.search(r"tunnel_certificate_not_after_seconds\{[^}]*\} (\S+)", text)
    assert found is not None, text
    assert float(found.group(1)) == leaf.not_valid_after_utc.timestamp()


# The Python plane's relay, and uvloop: a worker whose listeners are all compiled imports
# neither.
PYTHON_RELAY = (
    "tunnel.dataplane.connection",
    "tunnel.dataplane.relay",
    "tunnel.dataplane.passthrough",
    "tunnel.dataplane.backend_tls",
    "tunnel.dataplane.plain_backend",
    "tunnel.dataplane.failover",
)


@pytest.mark.parametrize("plane", ["compiled", "python"])
def test_the_python_relay_is_imported_only_where_a_listener_uses_it(
    tunnel: Launcher, tmp_path: Path, certs: Certs, hello_backend: Backend, plane: str
) -> None:
    dump = tmp_path / "modules"
    dump.mkdir()
    tunnel.env["TUNNEL_DEBUG_MODULES"] = str(dump)
    tunnel.env["TUNNEL_DATAPLANE"] = plane
    running = start_run(tunnel, tmp_path, certs, hello_backend, workers="1")
    running.proc.wait_log(f"listener web: {plane} data plane|data plane: python for every")
    wait_for("2 module lists", lambda: len(list(dump.glob("*.modules"))) == 2)
    for path in dump.glob("*.modules"):
        modules = set(path.read_text().split())
        loaded = [name for name in PYTHON_RELAY if name in modules]
        if plane == "compiled":
            assert loaded == [], f"{path.name} imports {loaded} with every listener compiled"
        else:
            # Imported by the supervisor before the fork, so that the workers share it.
            assert loaded == list(PYTHON_RELAY), f"{path.name} lacks the Python relay"
        # uvloop runs only the Python plane's loop; compiled-only workers run the plane's.
        assert ("uvloop" in modules) == (plane == "python"), f"{path.name}: uvloop"
