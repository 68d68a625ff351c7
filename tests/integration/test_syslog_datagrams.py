"""Syslog datagrams as they leave Tunnel: no trailing NUL unless asked for."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest

from tunnel.observe.log import ROOT_LOGGER, setup_logging

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(10)
    try:
        yield sock
    finally:
        sock.close()
        logger = logging.getLogger(ROOT_LOGGER)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()


@pytest.mark.parametrize(("nul", "ending"), [(False, b"hello"), (True, b"hello\x00")])
def test_trailing_nul_only_when_asked(receiver: socket.socket, nul: bool, ending: bytes) -> None:
    setup_logging("info", "syslog", "local3", syslog_address=receiver.getsockname(), syslog_nul=nul)
    logging.getLogger("tunnel.test").info("hello")
    datagram = receiver.recv(65536)
    assert datagram.startswith(b"<158>tunnel[")  # local3 (19) * 8 + info (6)
    assert datagram.endswith(b": INFO tunnel.test: " + ending)
