"""tunnel._native.peek.peer_gone: the client-left check of the Python plane, on real sockets."""

from __future__ import annotations

import errno
import socket
import struct

from tunnel._native.peek import peer_gone


def test_nothing_yet_then_data_then_fin() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        assert peer_gone(ours.fileno()) is None  # nothing sent yet: the peer may still
        theirs.sendall(b"x")
        theirs.shutdown(socket.SHUT_WR)
        assert peer_gone(ours.fileno()) is None  # a byte waits (peeked, not taken)
        assert ours.recv(1) == b"x"
        assert peer_gone(ours.fileno()) == 0  # only the FIN is left


def test_reset_is_the_socket_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        ours, _ = server.accept()
        with ours:
            # SO_LINGER with a zero timeout: close() sends a reset instead of a FIN.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            assert peer_gone(ours.fileno()) == errno.ECONNRESET
