"""proxy_from: which socket peers count as trusted balancers."""

from __future__ import annotations

import ipaddress

import pytest

from tunnel.dataplane.proxy_in import trusted

NETS = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        (("10.1.2.3", 1), True),
        (("11.0.0.1", 1), False),
        (("::1", 1, 0, 0), True),
        (("::ffff:10.0.0.9", 1, 0, 0), True),  # IPv4-mapped on a dual-stack socket
        (("fe80::1%eth0", 1, 0, 2), False),
        ("/run/sock", False),
        (None, False),
        (("not-an-ip", 1), False),
    ],
)
def test_trusted(peer: object, expected: bool) -> None:
    assert trusted(peer, NETS) is expected
