"""deploy/: the Kubernetes manifests and the container's configuration hang together.

No cluster here: the manifests are parsed with PyYAML and checked for the fields and
cross-references that a typo would break (probe paths and ports, mounts, selectors).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tunnel.config import parse_config

yaml = pytest.importorskip("yaml")

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def manifests() -> dict[str, dict[str, Any]]:
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()))
    by_kind = {doc["kind"]: doc for doc in docs}
    assert len(by_kind) == len(docs), "one object per kind expected"
    for doc in docs:
        assert doc["apiVersion"] and doc["metadata"]["name"]
    return by_kind


def test_all_objects_present() -> None:
    assert set(manifests()) == {"ConfigMap", "Secret", "Deployment", "Service"}


def test_configmap_is_the_shipped_container_config_and_valid() -> None:
    text = manifests()["ConfigMap"]["data"]["tunnel.ini"]
    assert text == (DEPLOY / "tunnel.ini").read_text()
    config = parse_config(text, "/etc/tunnel/tunnel.ini")
    assert config.tunnel.watch is True
    assert config.tunnel.admin is not None
    (web,) = config.listeners
    assert web.proxy_from, "the load balancer's PROXY v2 header must be read"
    assert web.cert == ("/etc/tunnel/certs/tls.crt",)
    assert web.key == "/etc/tunnel/certs/tls.key"


def container() -> dict[str, Any]:
    spec = manifests()["Deployment"]["spec"]["template"]["spec"]
    (only,) = spec["containers"]
    return dict(only)


def port_number(name: str) -> int:
    (port,) = [p["containerPort"] for p in container()["ports"] if p["name"] == name]
    return int(port)


def test_probes_use_the_admin_endpoint() -> None:
    config = parse_config((DEPLOY / "tunnel.ini").read_text(), "/etc/tunnel/tunnel.ini")
    assert config.tunnel.admin is not None
    assert port_number("admin") == config.tunnel.admin.port
    ready, live = container()["readinessProbe"], container()["livenessProbe"]
    assert ready["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert live["httpGet"] == {"path": "/healthz", "port": "admin"}


def test_https_port_matches_accept_and_service() -> None:
    config = parse_config((DEPLOY / "tunnel.ini").read_text(), "/etc/tunnel/tunnel.ini")
    (accept,) = config.listeners[0].accept
    assert port_number("https") == accept.port
    service = manifests()["Service"]
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "https"
    annotations = service["metadata"]["annotations"]
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-proxy-protocol"] == "*"


def test_selectors_and_mounts() -> None:
    by_kind = manifests()
    deployment = by_kind["Deployment"]["spec"]
    labels = deployment["template"]["metadata"]["labels"]
    assert deployment["selector"]["matchLabels"].items() <= labels.items()
    assert by_kind["Service"]["spec"]["selector"].items() <= labels.items()
    volumes = {v["name"]: v for v in deployment["template"]["spec"]["volumes"]}
    assert volumes["certs"]["secret"]["secretName"] == by_kind["Secret"]["metadata"]["name"]
    assert volumes["config"]["configMap"]["name"] == by_kind["ConfigMap"]["metadata"]["name"]
    mounts = {m["name"]: m["mountPath"] for m in container()["volumeMounts"]}
    assert mounts == {"config": "/etc/tunnel/tunnel.ini", "certs": "/etc/tunnel/certs"}
    assert by_kind["Secret"]["type"] == "kubernetes.io/tls"
    assert set(by_kind["Secret"]["data"]) == {"tls.crt", "tls.key"}


def test_runs_unprivileged_and_drains_in_time() -> None:
    spec = manifests()["Deployment"]["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert container()["securityContext"]["allowPrivilegeEscalation"] is False
    config = parse_config((DEPLOY / "tunnel.ini").read_text(), "/etc/tunnel/tunnel.ini")
    grace = spec["terminationGracePeriodSeconds"]
    assert grace > config.tunnel.shutdown_delay + config.tunnel.drain_timeout


def test_containerfile_runs_as_non_root_with_the_config() -> None:
    text = (REPO / "Containerfile").read_text()
    assert "FROM python:3.11-slim" in text
    assert "USER 10001:10001" in text
    assert "COPY deploy/tunnel.ini /etc/tunnel/tunnel.ini" in text
    uid = manifests()["Deployment"]["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    assert uid == 10001
