"""tls/bundle.py: every context a generation serves with, built as one value, no globals."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trustme

from tunnel.config import Config, parse_config
from tunnel.errors import ConfigErrors
from tunnel.tls.bundle import build_bundle


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    ca = trustme.CA()
    paths = {
        "cert": tmp_path / "server.pem",
        "ca": tmp_path / "ca.pem",
        "tickets": tmp_path / "tickets.key",
    }
    ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(str(paths["cert"]))
    ca.cert_pem.write_to_path(str(paths["ca"]))
    paths["tickets"].write_bytes(os.urandom(80))
    return paths


def config(files: dict[str, Path], *, tickets: bool = True, backend: bool = True) -> Config:
    text = f"[web]\naccept = 127.0.0.1:1\ncert = {files['cert']}\nconnect = 127.0.0.1:2\n"
    if tickets:
        text += f"ticket_key_file = {files['tickets']}\n"
    text += (
        f"client_ca = {files['ca']}\nverify = required\nallow_cn = alice\n"
        f"[api]\naccept = 127.0.0.1:3\ncert = {files['cert']}\nconnect = 127.0.0.1:4\n"
        f"client_ca = {files['ca']}\nverify = required\nallow_cn = bob\n"
    )
    if backend:
        text += f"[backend:secure]\nconnect = 127.0.0.1:5\ntls = yes\nca = {files['ca']}\n"
    return parse_config(text)


def test_a_bundle_holds_every_context(files: dict[str, Path]) -> None:
    bundle = build_bundle(config(files))
    assert set(bundle.listeners) == {"web", "api"}
    assert bundle.server("web") is bundle.listeners["web"].default
    assert set(bundle.backends) == {"secure"}
    assert list(bundle.tickets) == [str(files["tickets"])]
    # Each listener has its own allow-list check (and so its own rejection reason).
    web, api = bundle.listeners["web"].allow_check, bundle.listeners["api"].allow_check
    assert web is not None and api is not None and web is not api


def test_building_a_bundle_leaves_an_earlier_one_alone(files: dict[str, Path]) -> None:
    """No module-level state: a later build (e.g. a reload) changes nothing already built."""
    first = build_bundle(config(files))
    second = build_bundle(config(files, tickets=False, backend=False))
    assert set(first.backends) == {"secure"} and second.backends == {}
    assert list(first.tickets) == [str(files["tickets"])] and second.tickets == {}


def test_a_reload_keeps_the_ticket_keys_of_a_file_that_broke(files: dict[str, Path]) -> None:
    first = build_bundle(config(files))
    files["tickets"].write_bytes(b"broken")
    with pytest.raises(ConfigErrors, match="ticket_key_file"):
        build_bundle(config(files))  # a first start must not serve without the keys
    again = build_bundle(config(files), first)  # a reload keeps serving the keys it had
    assert again.tickets[str(files["tickets"])] is first.tickets[str(files["tickets"])]
    dropped = build_bundle(config(files, tickets=False), again)
    assert dropped.tickets == {}
