"""Tunnel's admin endpoint as the tests read it: a path's status and body, /metrics samples."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def get(port: int, path: str, host: str = "127.0.0.1") -> tuple[int, str]:
    """``GET path`` from the admin endpoint: (status, body), errors included."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(port: int, host: str = "127.0.0.1") -> Samples:
    """Every sample of /metrics, by (name, sorted labels)."""
    status, text = get(port, "/metrics", host)
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    """The sample ``name{labels}`` (0 when absent)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)
