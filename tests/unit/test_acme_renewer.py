"""The ACME process's loop (one step at a time): what it orders, when, and what it keeps.

The ordering function is a fake and the clock is injected; files live in a temporary
state directory (no sockets, no ACME server).
"""

from __future__ import annotations

import datetime
import fcntl
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from tunnel.config.acme import AcmeSettings, RenewBefore
from tunnel.process.acme import Managed, Renewer
from tunnel.process.acme_client import OrderError, parse_retry_after
from tunnel.tls.acme.renewal import MIN_RETRY
from tunnel.tls.acme.store import StateDir
from tunnel.tls.selfsigned import key_pem, new_key

NAMES = ("a.test", "b.test")
NOW = 1_800_000_000.0


def pem(not_before: float, not_after: float, names: tuple[str, ...] = NAMES) -> bytes:
    key = new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.datetime.fromtimestamp(not_before, datetime.UTC))
        .not_valid_after(datetime.datetime.fromtimestamp(not_after, datetime.UTC))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM) + key_pem(key)


class Harness:
    def __init__(self, root: Path) -> None:
        self.settings = AcmeSettings("https://ca.test/dir", str(root), renew_before=RenewBefore(30))
        self.path = StateDir(str(root)).cert(NAMES)
        self.cert = Managed(NAMES, self.path)
        self.now = NOW
        self.orders: list[tuple[str, ...]] = []
        self.reloads = 0
        self.result: bytes | Exception = pem(NOW - 10, NOW + 100)
        self.renewer = Renewer(
            self.settings, [self.cert], self.order, self.reload, clock=lambda: self.now
        )

    def order(self, names: tuple[str, ...]) -> bytes:
        self.orders.append(names)
        if isinstance(self.result, Exception):
            raise self.result
        return self.result

    def reload(self) -> None:
        self.reloads += 1

    def store(self, data: bytes) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        Path(self.path).write_bytes(data)


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def test_no_certificate_orders_writes_0600_and_asks_for_a_reload(h: Harness) -> None:
    h.renewer.step()
    assert h.orders == [NAMES] and h.reloads == 1
    assert os.stat(h.path).st_mode & 0o777 == 0o600
    assert h.renewer.orders == {"ok": 1, "failed": 0}
    h.renewer.step()  # valid now: nothing more
    assert h.orders == [NAMES] and h.reloads == 1


def test_a_valid_certificate_is_renewed_at_renew_before(h: Harness) -> None:
    h.store(pem(NOW - 10, NOW + 100))
    h.cert.seen = h.cert.identity()
    assert h.renewer.step() <= 2.0
    assert h.orders == [] and h.reloads == 0
    h.now = NOW + 69
    h.renewer.step()
    assert h.orders == []
    h.now = NOW + 70  # 30 s before expiry
    h.result = pem(NOW + 60, NOW + 200)
    h.renewer.step()
    assert h.orders == [NAMES] and h.reloads == 1


def test_a_failed_order_keeps_the_file_and_backs_off(h: Harness) -> None:
    old = pem(NOW - 100, NOW + 10)
    h.store(old)
    h.cert.seen = h.cert.identity()
    h.result = OrderError("connection refused")
    h.renewer.step()
    assert Path(h.path).read_bytes() == old and h.reloads == 0
    assert h.cert.retry_at == NOW + MIN_RETRY
    h.now += MIN_RETRY - 1
    h.renewer.step()
    assert len(h.orders) == 1  # still waiting
    h.now += 1
    h.result = OrderError("rate limited", retry_after=600.0)
    h.renewer.step()
    assert len(h.orders) == 2 and h.cert.retry_at == h.now + 600.0
    assert h.renewer.orders == {"ok": 0, "failed": 2}


def test_while_another_instance_holds_the_lock_nothing_is_ordered(h: Harness) -> None:
    os.makedirs(h.settings.state_dir, exist_ok=True)
    with open(StateDir(h.settings.state_dir).lock, "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another open file description: like a process
        h.renewer.step()
        assert h.orders == []
        h.store(pem(NOW - 1, NOW + 100))  # the other instance's result
        h.now += 2
        h.renewer.step()
    assert h.orders == [] and h.reloads == 1  # picked up, not ordered again


def test_a_certificate_for_other_names_is_replaced(h: Harness) -> None:
    h.store(pem(NOW - 10, NOW + 100, names=("a.test",)))
    h.cert.seen = h.cert.identity()
    h.renewer.step()
    assert h.orders == [NAMES]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("120", 120.0), (None, None), ("soon", None), ("Thu, 15 Jan 2027 08:00:30 GMT", 30.0)],
)
def test_retry_after_header(text: str | None, expected: float | None) -> None:
    now = datetime.datetime(2027, 1, 15, 8, 0, 0, tzinfo=datetime.UTC).timestamp()
    assert parse_retry_after(text, now) == expected
