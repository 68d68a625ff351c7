"""What a serving process imports: only what serving needs (issue 12, "small footprint").

A fresh interpreter does what ``tunnel run`` does before it forks its workers (import the
command line, the supervisor and the worker, build the TLS contexts of a listener, read
certificate expiry dates for the metrics, count a connection, render ``/metrics``) and lists
``sys.modules``. Certificate parsing (``cryptography``), metrics rendering
(``prometheus_client``) and the ``demo`` / ``status`` commands must not be among them:
each costs megabytes in every serving process. tests/system/test_footprint.py checks the
real processes.
"""

from __future__ import annotations

import json
import site
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trustme

SRC = Path(__file__).resolve().parents[2] / "src"

# Serving processes never need these; each line says who does.
FORBIDDEN = (
    "cryptography",  # tunnel check (certificate details), demo, gen-cert, mTLS listeners
    "prometheus_client",  # tunnel status (its parser); /metrics is rendered without it
    "tunnel.cli.demo",  # tunnel demo, tunnel gen-cert
    "tunnel.cli.status",  # tunnel status
    "logging.handlers",  # log_target = syslog
    "difflib",  # "did you mean" in configuration errors
    "tunnel.process.acme_runner",  # an [acme] section (the ACME process)
    "tunnel.tls.acme.challenge",  # listeners with acme names
    "http.server",  # the ACME process's http-01 responder
)
# Stdlib modules serving never needs (~1.1 MB of heap together); each line says who does.
# Checked with ``python -S``: a ``.pth`` hook of this machine's site-packages loads
# ``certifi``, which imports them into every Python process here.
FORBIDDEN_STDLIB = (
    "tempfile",  # replacing a file atomically (gen-cert, demo, ACME state); it pulls
    "shutil",  # shutil, bz2, lzma and random with it
    "pathlib",  # the same commands' paths
    "urllib.parse",  # an [acme] directory URL
    "shlex",  # the fix for a file the workers could not read
    "lzma",  # (and bz2, zlib) shutil, which argparse imports for the terminal's width
)

SCRIPT = """
import json, sys
from tunnel.cli import main  # the `tunnel` entry point
from tunnel.cli.main import build_parser
from tunnel.config import parse_config
from tunnel.dataplane import fastplane, worker
from tunnel.observe.collector import Observer
from tunnel.observe.metrics import ListenerStats, snapshot
from tunnel.process import generation, service, supervisor

build_parser().parse_args(["run", "-c", "tunnel.ini"])  # as `tunnel run` parses its arguments
config = parse_config(sys.argv[1], "<footprint>")
contexts = generation.build_contexts(config)
observer = Observer(config, 1)
observer.prepare()  # reads the expiry dates for the metrics (no admin endpoint to bind)
stats = ListenerStats()
stats.handshake_ok(0.01, "TLSv1.3", "TLS_AES_128_GCM_SHA256", "-")
observer.snapshots[0] = snapshot({"web": stats}, {})
status, _, body = observer.respond("/metrics")  # rendering, as a scrape does
assert status == 200 and b"tunnel_handshakes_total" in body
expiry = list(observer.cert_not_after.values())
modules = sorted(sys.modules)
worker.import_python_plane(config)  # as the supervisor does before it forks
backends = {backend.name: backend for backend in config.backends}
planes = [
    fastplane.choose(listener, backends, config.tunnel.dataplane)[0]
    for listener in config.listeners
]
uvloop = "uvloop" in sys.modules
print(json.dumps({"modules": modules, "expiry": expiry, "planes": planes, "uvloop": uvloop}))
"""


def serving_modules(config: str, *, no_site: bool = False) -> dict[str, Any]:
    """What the script imports; ``no_site``: without site-packages' ``.pth`` files."""
    path, flags = [str(SRC)], []
    if no_site:
        path += site.getsitepackages()  # the same packages, their .pth files not run
        flags = ["-S"]
    done = subprocess.run(
        [sys.executable, *flags, "-c", SCRIPT, config],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": ":".join(path), "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def loaded(modules: list[str], name: str) -> bool:
    return any(m == name or m.startswith(name + ".") for m in modules)


@pytest.fixture
def cert_file(tmp_path: Path) -> Path:
    leaf = trustme.CA().issue_cert("localhost", "www.example.org")
    path = tmp_path / "cert.pem"
    leaf.private_key_and_cert_chain_pem.write_to_path(str(path))
    return path


def test_serving_imports_no_certificate_parsing_rendering_or_demo(cert_file: Path) -> None:
    config = f"[web]\naccept = 127.0.0.1:8443\ncert = {cert_file}\nconnect = 127.0.0.1:8080\n"
    result = serving_modules(config)
    assert [name for name in FORBIDDEN if loaded(result["modules"], name)] == []
    assert len(result["expiry"]) == 1  # the expiry date was read, without cryptography


def test_serving_imports_no_file_replacing_or_url_parsing(cert_file: Path) -> None:
    config = f"[web]\naccept = 127.0.0.1:8443\ncert = {cert_file}\nconnect = 127.0.0.1:8080\n"
    modules = serving_modules(config, no_site=True)["modules"]
    assert [name for name in FORBIDDEN_STDLIB if loaded(modules, name)] == []


def test_a_listener_taking_client_certificates_loads_x509_before_the_fork(
    cert_file: Path,
) -> None:
    config = (
        f"[web]\naccept = 127.0.0.1:8443\ncert = {cert_file}\nconnect = 127.0.0.1:8080\n"
        f"client_ca = {cert_file}\nverify = optional\n"
    )
    modules = serving_modules(config)["modules"]
    # Workers parse client certificates; importing it here lets them share its pages.
    assert "cryptography.x509" in modules
    assert not loaded(modules, "prometheus_client")


@pytest.mark.parametrize("setting", ["compiled", "python"])
def test_uvloop_is_imported_only_for_a_listener_on_the_python_plane(
    cert_file: Path, setting: str
) -> None:
    config = (
        f"[tunnel]\ndataplane = {setting}\n"
        f"[web]\naccept = 127.0.0.1:8443\ncert = {cert_file}\nconnect = 127.0.0.1:8080\n"
    )
    result = serving_modules(config)
    # Compiled-only workers run the plane's own loop: uvloop would only cost memory.
    assert "uvloop" not in result["modules"]  # not by importing the worker's modules
    # Imported before the fork when a worker will run uvloop's loop, so workers share it.
    assert result["uvloop"] == ("python" in result["planes"])
