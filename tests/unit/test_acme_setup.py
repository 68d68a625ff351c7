"""ACME set-up problems that must show at start, not later (no sockets, no server)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tunnel.config import Config, parse_config
from tunnel.errors import ConfigErrors
from tunnel.process.acme_runner import own_state_dir, runner_for
from tunnel.process.privileges import Identity
from tunnel.tls.acme import served


def config(tmp_path: Path) -> Config:
    text = (
        f"[acme]\ndirectory = https://ca.test/dir\nstate_dir = {tmp_path}\n"
        "[web]\naccept = 127.0.0.1:8443\nacme = a.test\nconnect = 127.0.0.1:80\n"
    )
    return parse_config(text, str(tmp_path / "t.ini"))


def test_without_the_acme_package_the_start_fails_with_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "acme", None)  # import acme now raises ImportError
    with pytest.raises(ConfigErrors) as info:
        runner_for(config(tmp_path))
    assert "[acme]" in str(info.value) and "pip install 'tunnel[acme]'" in str(info.value)


def test_a_placeholder_directory_that_is_no_longer_writable_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After privileges are dropped, the directory made as root cannot be written.
    monkeypatch.setattr(served, "_placeholder_dir", [str(tmp_path / "gone")])
    path = served.served_cert(("a.test",), str(tmp_path / "state"))
    assert Path(path).is_file() and not path.startswith(str(tmp_path / "gone"))


def test_state_dir_is_handed_to_the_serving_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    (state / "certs").mkdir(parents=True)
    (state / "account.json").write_text("{}")
    calls: list[tuple[str, int, int]] = []
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(os, "chown", lambda p, u, g, **_kw: calls.append((str(p), u, g)))
    own_state_dir(str(state), Identity("svc", 998, 997))
    assert sorted(calls) == sorted(
        (str(p), 998, 997) for p in (state, state / "certs", state / "account.json")
    )
    calls.clear()
    own_state_dir(str(tmp_path / "new"), None)  # no user: only made, 0700
    assert calls == [] and (tmp_path / "new").stat().st_mode & 0o777 == 0o700
