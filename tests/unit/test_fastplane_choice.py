"""Which listeners the compiled data plane serves, and the reason given for the others."""

from __future__ import annotations

import dataclasses
import ssl
import sys
from collections.abc import Iterator

import pytest

from tunnel import dataplane as dataplane_package
from tunnel.config import Address, BackendConfig, ListenerConfig, Rate
from tunnel.config.routing import Route
from tunnel.dataplane import fastplane, plane

PLAIN = ListenerConfig(
    name="web",
    accept=(Address("tcp", "127.0.0.1", 8443),),
    cert=("server.pem",),
    key=None,
    connect=(Address("tcp", "127.0.0.1", 8080), Address("unix", path="/run/app.sock")),
)


def test_a_plain_listener_is_compiled() -> None:
    assert fastplane.unsupported(PLAIN, {}) is None


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"acme": ("www.example.com",)}, "acme"),
    ],
)
def test_features_not_compiled_yet_fall_back(change: dict[str, object], why: str) -> None:
    listener = dataclasses.replace(PLAIN, **change)  # type: ignore[arg-type]
    reason = fastplane.unsupported(listener, {})
    assert reason is not None and reason.startswith(why)


@pytest.mark.parametrize(
    "change",
    [
        {"keylog_file": "/tmp/keys"},
        {"deny_ja4": ("t13d1516h2_8daaf6152771_e5627efa2ab1",)},
        {"max_connection_rate_per_ip": Rate(20.0, 20)},
        {"max_handshake_rate_per_ip": Rate(10.0, 10)},
    ],
)
def test_listener_policies_are_compiled(change: dict[str, object]) -> None:
    """keylog_file and deny_ja4 act in the handshake (fp_policy.c), the rates at accept."""
    listener = dataclasses.replace(PLAIN, **change)  # type: ignore[arg-type]
    assert fastplane.unsupported(listener, {}) is None


def test_backend_host_names_are_compiled() -> None:
    """They are resolved by the event loop, then the C side connects (fastplane._resolve)."""
    listener = dataclasses.replace(PLAIN, connect=(Address("tcp", "backend.example", 80),))
    assert fastplane.unsupported(listener, {}) is None


def test_proxy_from_is_compiled() -> None:
    """PROXY in: C peeks at the header, the Python plane's decoder reads it (fp_proxy.c)."""
    import ipaddress

    listener = dataclasses.replace(PLAIN, proxy_from=(ipaddress.ip_network("10.0.0.0/8"),))
    assert fastplane.unsupported(listener, {}) is None


def test_a_routed_tls_backend_is_compiled() -> None:
    """The C side runs the backend handshake (csrc/fp_backend_tls.c)."""
    backends = {
        "api": BackendConfig("api", (Address("tcp", "10.0.0.1", 443),), tls=True),
    }
    listener = dataclasses.replace(PLAIN, routes=(Route("sni", "api.example.com", "api"),))
    assert fastplane.unsupported(listener, backends) is None


def test_a_tls_backend_with_a_key_log_is_compiled() -> None:
    """C's key log callback goes in front of CPython's on that context (fastplane_tls)."""
    api = BackendConfig("api", (Address("tcp", "10.0.0.1", 443),), tls=True, keylog_file="/k")
    listener = dataclasses.replace(PLAIN, backend="api")
    assert fastplane.unsupported(listener, {"api": api}) is None


def test_passthrough_backends_are_compiled() -> None:
    """C sniffs the ClientHello, Python's reader routes it (csrc/fp_passthrough.c)."""
    backends = {"pass": BackendConfig("pass", (Address("tcp", "10.0.0.2", 443),), passthrough=True)}
    listener = dataclasses.replace(PLAIN, routes=(Route("sni", "pass.example", "pass"),))
    assert fastplane.unsupported(listener, backends) is None
    assert fastplane.unsupported(dataclasses.replace(PLAIN, backend="pass"), backends) is None


@pytest.fixture
def fresh_choice(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No TUNNEL_DATAPLANE, and load() asked again (it is cached per process)."""
    monkeypatch.delenv(fastplane.ENV, raising=False)
    fastplane.load.cache_clear()
    yield monkeypatch
    fastplane.load.cache_clear()


def test_the_compiled_plane_is_the_default_where_built(fresh_choice: pytest.MonkeyPatch) -> None:
    pytest.importorskip("tunnel.dataplane._fastplane")
    assert fastplane.choose(PLAIN, {}) == ("compiled", "")
    assert fastplane.choose(PLAIN, {}, "compiled") == ("compiled", "")
    assert not plane.worth_a_warning("compiled")


def test_the_python_plane_by_variable_or_key(fresh_choice: pytest.MonkeyPatch) -> None:
    assert fastplane.choose(PLAIN, {}, "python") == ("python", "dataplane = python")
    fresh_choice.setenv(fastplane.ENV, "Python ")
    fastplane.load.cache_clear()
    assert fastplane.choose(PLAIN, {}) == ("python", "TUNNEL_DATAPLANE=python")
    # The variable wins over the key, both ways.
    assert fastplane.choose(PLAIN, {}, "compiled") == ("python", "TUNNEL_DATAPLANE=python")
    fresh_choice.setenv(fastplane.ENV, "compiled")
    fastplane.load.cache_clear()
    assert fastplane.choose(PLAIN, {}, "python") == (
        ("compiled", "") if _built() else ("python", fastplane.load("python")[1])
    )
    assert "dataplane = python" not in fastplane.choose(PLAIN, {}, "python")[1]


def test_an_unknown_variable_value_is_named(fresh_choice: pytest.MonkeyPatch) -> None:
    fresh_choice.setenv(fastplane.ENV, "fast")
    assert fastplane.choose(PLAIN, {}) == (
        "python",
        "TUNNEL_DATAPLANE=fast is not one of auto, compiled, python",
    )
    assert plane.worth_a_warning()


@pytest.mark.parametrize("setting", ["auto", "compiled"])
def test_without_the_extension_the_python_plane_serves(
    fresh_choice: pytest.MonkeyPatch, setting: str
) -> None:
    """As after ``pip install`` on a machine without a C compiler."""
    fresh_choice.setitem(sys.modules, "tunnel.dataplane._fastplane", None)
    fresh_choice.delattr(dataplane_package, "_fastplane", raising=False)
    plane_, why = fastplane.choose(PLAIN, {}, setting)
    assert plane_ == "python"
    assert "the compiled data plane is not built" in why
    # Asked for by name: a warning (tunnel check, the start-up log), not a failure.
    assert why.startswith("dataplane = compiled, but ") == (setting == "compiled")
    assert plane.worth_a_warning(setting) == (setting == "compiled")


def _built() -> bool:
    try:
        import tunnel.dataplane._fastplane  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return False
    return True


def test_the_layout_check_accepts_real_contexts_and_refuses_others() -> None:
    """Needs the extension built (pip install -e ., or python setup.py build_ext --inplace).

    Where no compiler built it, Tunnel runs the Python plane and this test has nothing to
    check; CI builds it and imports it before the tests, so there it always runs.
    """
    module = pytest.importorskip("tunnel.dataplane._fastplane")

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    assert module.ctx_pointer(ctx) > 0
    with pytest.raises(TypeError):
        module.ctx_pointer(object())


def test_client_mode_is_compiled() -> None:
    """Plaintext clients (csrc/fp_plain_client.c), TLS to the backend."""
    remote = BackendConfig("remote", (Address("tcp", "10.0.0.1", 443),), tls=True)
    listener = dataclasses.replace(PLAIN, client=True, backend="remote")
    assert fastplane.unsupported(listener, {"remote": remote}) is None
