"""The Grafana dashboard and the Prometheus rules query what a real Tunnel exposes.

One Tunnel runs with an admin endpoint and gets traffic that gives every metric family a
series: a request, a connection that is not TLS, a listener whose backend refuses, a client
denied by its JA4 fingerprint, and a reload. Every ``tunnel_*`` metric the dashboard and the
rules query must be in its ``/metrics``, with the labels they filter and group by (and the
label values they match exactly). The rules also pass ``promtool check rules`` and their
``promtool test rules``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml
from harness.http import fetch
from prometheus_client.parser import text_string_to_metric_families

from .conftest import (
    REPO,
    Backend,
    Launcher,
    base_env,
    hello_handler,
    port_accepts,
    reserve_port,
    wait_for,
    write_certs,
)

pytestmark = pytest.mark.timeout(90)

DASHBOARD = REPO / "contrib" / "grafana" / "tunnel.json"
RULES = REPO / "contrib" / "prometheus" / "tunnel-rules.yml"
RULE_TESTS = REPO / "contrib" / "prometheus" / "tunnel-rules.test.yml"
ADDED_BY_PROMETHEUS = {"instance", "job"}

Labels = dict[str, set[str]]  # label name -> the values seen


def scrape_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return str(reply.read().decode())


def series(text: str) -> dict[str, Labels]:
    """Every sample name of a scrape, with its labels and their values."""
    found: dict[str, Labels] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = found.setdefault(sample.name, {})
            for key, value in sample.labels.items():
                labels.setdefault(key, set()).add(value)
    return found


SOMEONE_ELSE = "t13d1516h2_8daaf6152771_e5627efa2ab1"  # a JA4 that is not this test's client


def write_listeners(
    path: Path,
    certs_dir: Path,
    backend: int,
    admin: int,
    ports: dict[str, int],
    ja4: str = SOMEONE_ELSE,
) -> None:
    """Listener "web" fronts ``backend``, "down" a port nobody listens on, and "picky"
    fronts ``backend`` but denies the client fingerprint ``ja4``."""
    cert, key = certs_dir / "cert.pem", certs_dir / "key.pem"
    root = "allow_root = yes\n" if os.geteuid() == 0 else ""  # tests may run as root (CI does)
    text = (
        f"[tunnel]\nworkers = 2\nadmin = 127.0.0.1:{admin}\n{root}\n"
        f"[web]\naccept = 127.0.0.1:{ports['web']}\ncert = {cert}\nkey = {key}\n"
        f"connect = 127.0.0.1:{backend}\n\n"
        f"[down]\naccept = 127.0.0.1:{ports['down']}\ncert = {cert}\nkey = {key}\n"
        f"connect = 127.0.0.1:{reserve_port()}\nconnect_timeout = 2s\n\n"
        f"[picky]\naccept = 127.0.0.1:{ports['picky']}\ncert = {cert}\nkey = {key}\n"
        f"connect = 127.0.0.1:{backend}\ndeny_ja4 = {ja4}\n"
    )
    path.write_text(text)


def tls_attempt(port: int, ca_pem: Path) -> None:
    """A TLS connection that Tunnel may refuse or close early (errors are expected)."""
    context = ssl.create_default_context(cafile=str(ca_pem))
    with (
        contextlib.suppress(OSError),  # ssl.SSLError too
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.recv(100)


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA) -> Iterator[str]:
    """The /metrics text of a Tunnel that served some of everything."""
    tmp = tmp_path_factory.mktemp("monitoring")
    (tmp / "home").mkdir()
    launcher = Launcher(tmp, base_env(tmp / "home"))
    backend = Backend(hello_handler)
    try:
        certs = write_certs(ca, tmp / "certs")
        admin = reserve_port()
        config = tmp / "tunnel.ini"
        ports = {"web": reserve_port(), "down": reserve_port(), "picky": reserve_port()}
        write_listeners(config, tmp / "certs", backend.port, admin, ports)
        proc = launcher.start("run", "-c", str(config))
        proc.wait_log(r"tunnel started")
        wait_for("the listeners", lambda: port_accepts(ports["web"]))
        # This client's fingerprint (computed where deny_ja4 is set), to deny it after the
        # reload.
        assert fetch(ports["picky"], certs.ca_pem)[1].endswith(b"hello from the backend\n")
        ja4 = proc.wait_log(r"listener=picky .* ja4=(\S+)").group(1)
        write_listeners(config, tmp / "certs", backend.port, admin, ports, ja4)
        # The reload comes before the counted traffic: connections that end just before
        # one are not counted (the retiring workers' last report is lost).
        proc.signal(signal.SIGHUP)
        proc.wait_log(r"generation 2 serving")
        assert fetch(ports["web"], certs.ca_pem)[1].endswith(b"hello from the backend\n")
        with socket.create_connection(("127.0.0.1", ports["web"]), timeout=5) as plain:
            plain.sendall(b"GET / HTTP/1.0\r\n\r\n")  # not TLS: a failed handshake
            plain.recv(100)
        tls_attempt(ports["down"], certs.ca_pem)  # closed as the backend connect fails
        tls_attempt(ports["picky"], certs.ca_pem)  # refused by deny_ja4

        missing: list[str] = []

        def settled() -> bool:
            found = series(scrape_text(admin))
            wanted = [
                "tunnel_backend_connect_failures_total",
                "tunnel_reloads_total",
                "tunnel_clients_denied_total",
            ]
            missing[:] = [name for name in wanted if name not in found]
            if "not_tls" not in found.get("tunnel_handshakes_total", {}).get("result", set()):
                missing.append('tunnel_handshakes_total{result="not_tls"}')
            return not missing

        try:
            wait_for("the traffic in /metrics", settled, timeout=20)
        except pytest.fail.Exception:
            pytest.fail(f"not in /metrics after 20s: {', '.join(missing)}")
        yield scrape_text(admin)
    finally:
        launcher.stop_all()
        backend.close()


SELECTOR = re.compile(r"\b(tunnel_[a-z0-9_]+)\s*(?:\{([^}]*)\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")


def queries_of_dashboard() -> list[str]:
    """Every PromQL text of the dashboard: panel targets and template variable queries."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "definition") and isinstance(value, str):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.loads(DASHBOARD.read_text()))
    return found


def queries_of_rules() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [str(rule["expr"]) for group in groups for rule in group["rules"]]


def problems(queries: list[str], exposed: dict[str, Labels]) -> list[str]:
    """What the queries ask for that the scrape does not have."""
    found = []
    for query in queries:
        labels_here: set[str] = set(ADDED_BY_PROMETHEUS)
        for name, matchers in SELECTOR.findall(query):
            if name not in exposed:
                found.append(f"{name} is not exposed (in {query!r})")
                continue
            labels = exposed[name]
            labels_here |= set(labels)
            for label, op, value in MATCHER.findall(matchers):
                if label in ADDED_BY_PROMETHEUS:
                    continue
                if label not in labels:
                    found.append(f"{name} has no label {label!r} (in {query!r})")
                elif op == "=" and "$" not in value and value not in labels[label]:
                    found.append(f'{name}{{{label}="{value}"}} never occurs (in {query!r})')
        for grouping in GROUPING.findall(query):
            for label in (x.strip() for x in grouping.split(",")):
                if label and label not in labels_here:
                    found.append(f"no queried metric has the label {label!r} (in {query!r})")
    return found


def test_every_metric_of_the_dashboard_is_exposed(scraped: str) -> None:
    queries = queries_of_dashboard()
    assert len(queries) > 20
    assert problems(queries, series(scraped)) == []


def test_every_metric_of_the_rules_is_exposed(scraped: str) -> None:
    queries = queries_of_rules()
    assert len(queries) == 7
    assert problems(queries, series(scraped)) == []


def test_a_wrong_name_or_label_is_found(scraped: str) -> None:
    exposed = series(scraped)
    assert problems(["rate(tunnel_handshake_total[5m])"], exposed)
    assert problems(['tunnel_workers{state="ready"}'], exposed)
    assert problems(["sum by (worker) (tunnel_connections_active)"], exposed)
    assert problems(['tunnel_bytes_total{dir="in"}'], exposed)


def test_dashboard_panels_have_unique_ids_and_use_the_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "instance", "listener"} <= variables
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool is not installed (Debian package prometheus; CI installs it)")
    return subprocess.run(
        [tool, *args], cwd=RULES.parent, capture_output=True, text=True, timeout=60, check=False
    )


def test_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout


def test_rules_pass_their_promtool_tests() -> None:
    result = promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
