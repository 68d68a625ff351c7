"""TLS clients that show every byte: a blocking client over memory BIOs, ``s_client``."""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from .waits import wait_until


class BioClient:
    """A blocking TLS client over a raw socket and ``ssl.MemoryBIO``.

    The test sees and controls every byte on the wire: ``raw_send`` bypasses TLS,
    ``encrypt`` returns the records without sending them, ``close_notify`` half-closes.
    """

    def __init__(
        self,
        ctx: ssl.SSLContext,
        address: tuple[str, int],
        timeout: float = 10.0,
        server_hostname: str | None = "localhost",
    ) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname=server_hostname)
        self.received_raw = bytearray()  # every byte read from the socket

    def flush(self) -> None:
        """Send what the TLS layer has written."""
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def fill(self) -> bool:
        """Read from the socket into the TLS layer; False on EOF."""
        data = self.sock.recv(65536)
        if not data:
            self.incoming.write_eof()
            return False
        self.received_raw += data
        self.incoming.write(data)
        return True

    def client_hello(self) -> bytes:
        """Start the handshake and return the ClientHello bytes without sending them."""
        with contextlib.suppress(ssl.SSLWantReadError):
            self.obj.do_handshake()
        return self.outgoing.read()

    def handshake(self) -> None:
        """Complete the handshake."""
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.flush()
                self.fill()
        self.flush()

    def encrypt(self, data: bytes) -> bytes:
        """The TLS records carrying ``data``, not sent."""
        self.obj.write(data)
        return self.outgoing.read()

    def send(self, data: bytes) -> None:
        """Encrypt and send ``data``."""
        self.obj.write(data)
        self.flush()

    def recv(self, n: int = 65536) -> bytes:
        """Decrypted bytes; b"" on close_notify; SSLEOFError on a bare TCP close."""
        while True:
            try:
                return self.obj.read(n)
            except ssl.SSLWantReadError:
                self.flush()
                self.fill()
            except ssl.SSLZeroReturnError:
                return b""

    def recv_all(self) -> bytes:
        """Everything until the server's close_notify."""
        parts = []
        while data := self.recv():
            parts.append(data)
        return b"".join(parts)

    def close_notify(self) -> None:
        """Send our close_notify (we may still read)."""
        with contextlib.suppress(ssl.SSLWantReadError):
            self.obj.unwrap()
        self.flush()

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


def s_client_renegotiate(
    port: int, ca_file: Path, first_line: bytes, sent: Callable[[], object], reply: bytes = b""
) -> str:
    """Drive ``openssl s_client -tls1_2``: send ``first_line``, wait for ``sent()`` to say
    the backend got it (and for s_client to print ``reply``, if the backend answers: data
    arriving in the middle of the renegotiation would make s_client fail with "unexpected
    record"), then ask for a renegotiation ('R') and return s_client's output once it
    reports the outcome (whether s_client then exits by itself differs between OpenSSL
    versions, so its exit is not waited for)."""
    command = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_2"]
    command += ["-servername", "localhost", "-CAfile", str(ca_file)]
    proc = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    chunks: list[bytes] = []
    try:
        assert proc.stdin is not None and proc.stdout is not None
        out = proc.stdout
        reader = threading.Thread(target=lambda: chunks.extend(iter(out.readline, b"")))
        reader.start()
        proc.stdin.write(first_line)
        proc.stdin.flush()
        sent()
        if reply:
            wait_until(lambda: reply in b"".join(chunks), 10, what="s_client printing the reply")
        proc.stdin.write(b"R\n")  # s_client's command letter: renegotiate
        proc.stdin.flush()
        wait_until(
            lambda: b"no renegotiation" in b"".join(chunks) or proc.poll() is not None,
            timeout=30,
            what="s_client's renegotiation outcome",
        )
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
    return b"".join(chunks).decode(errors="replace")
