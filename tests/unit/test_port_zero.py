"""Port 0 in the config: where Tunnel listens the kernel may choose, where it connects not."""

from __future__ import annotations

import pytest

from tunnel.config import Address, parse_config
from tunnel.errors import ConfigErrors

LISTENER = "[l]\naccept = {accept}\ncert = /c.pem\nconnect = {connect}\n"


def test_accept_and_admin_may_say_port_0() -> None:
    text = "[tunnel]\nadmin = 127.0.0.1:0\n\n" + LISTENER.format(
        accept="127.0.0.1:0, [::1]:0", connect="127.0.0.1:9"
    )
    config = parse_config(text, "/etc/t.ini")
    assert config.tunnel.admin == Address("tcp", host="127.0.0.1", port=0)
    assert [a.port for a in config.listeners[0].accept] == [0, 0]


def test_connect_needs_a_real_port() -> None:
    text = LISTENER.format(accept="127.0.0.1:0", connect="127.0.0.1:0")
    with pytest.raises(ConfigErrors) as info:
        parse_config(text, "/etc/t.ini")
    (error,) = info.value.errors
    assert (error.section, error.key) == ("l", "connect")
    assert "out of range" in str(error) and "1..65535" in str(error)
