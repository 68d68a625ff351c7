"""A stream-based TLS relay (asyncio streams + uvloop), kept only as a design baseline.

Tunnel's relay is Protocol-based (src/tunnel/relay.py). This is the straightforward
alternative: ``asyncio.start_server(ssl=...)`` and two copy tasks per connection. The
relay-design comparison (bench/designs/compare.py) runs both side by side.

Usage: python stream_relay.py CERT_PEM LISTEN_PORT BACKEND_PORT
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import sys

import uvloop

CHUNK = 65536


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        else:
            writer.close()  # asyncio's SSL transport cannot half-close
    except (ConnectionError, ssl.SSLError):
        pass


async def _handle(
    c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter, backend_port: int
) -> None:
    try:
        b_reader, b_writer = await asyncio.open_connection("127.0.0.1", backend_port)
    except OSError:
        c_writer.close()
        return
    try:
        await asyncio.gather(_pump(c_reader, b_writer), _pump(b_reader, c_writer))
    finally:
        for writer in (c_writer, b_writer):
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def main(cert: str, port: int, backend_port: int) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert)
    server = await asyncio.start_server(
        lambda r, w: _handle(r, w, backend_port), "127.0.0.1", port, ssl=ctx, backlog=1024
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
