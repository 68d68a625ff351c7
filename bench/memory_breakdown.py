"""Where the memory of an idle TLS connection goes, per connection and per component.

Runs Tunnel's listener code (``ListenerRuntime`` and its connection classes, the code of
the checkout this script is in) on a uvloop loop in this process, a backend that just
holds connections in a child process, and the benchmark's idle-connection holder
(``tlsbench/idle_client.py``, TLS 1.3) in another child, so this process's memory is the
terminator's alone. It reports, per held connection:

* the growth of RSS, of glibc's ``mallinfo2().uordblks`` (bytes in use from malloc: OpenSSL,
  libuv handles, large Python objects) and of Python's tracemalloc total (every Python
  allocation, including pymalloc, which is not in mallinfo2), in a first batch without
  tracemalloc and a second batch with it;
* the top tracemalloc lines of the second batch (which Python objects each connection
  holds, and where they come from);
* the TLS part on its own: a server ``SSLObject`` and its two memory BIOs after an
  in-memory TLS 1.3 (and 1.2) handshake with the client side freed, before and after
  :func:`tunnel._native.bio.trim_bio` empties the BIOs' buffers.

Usage: ``python bench/memory_breakdown.py [-n 2000]`` (about 20 s). Nothing is written.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import ctypes
import gc
import socket
import ssl
import subprocess
import sys
import tempfile
import textwrap
import time
import tracemalloc
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

import uvloop  # noqa: E402
from tlsbench.certs import make_cert  # noqa: E402
from tlsbench.loads import IdleClient  # noqa: E402

from tunnel._native import bio as _openssl_bio  # noqa: E402
from tunnel.config import parse_config  # noqa: E402
from tunnel.dataplane import tls_endpoint  # noqa: E402
from tunnel.dataplane.connection import ListenerRuntime  # noqa: E402
from tunnel.tls.contexts import build_server_context  # noqa: E402

BACKEND = textwrap.dedent(
    """
    import asyncio, sys
    held = []
    burst = b"x" * int(sys.argv[1])
    async def main():
        async def keep(reader, writer):
            held.append(writer)
            if burst:
                writer.write(burst)
        server = await asyncio.start_server(keep, "127.0.0.1", 0, backlog=4096)
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    asyncio.run(main())
    """
)


class MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            *("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks"),
            *("uordblks", "fordblks", "keepcost"),
        )
    ]


_libc = ctypes.CDLL(None)
_libc.mallinfo2.restype = MallInfo2


def malloc_used() -> int:
    """Bytes in use from glibc malloc, all arenas."""
    gc.collect()
    return int(_libc.mallinfo2().uordblks)


def rss() -> int:
    """This process's resident set, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class NoLimits:
    """The worker's accept control, reduced to nothing."""

    def opened(self, listener: str) -> None:
        pass

    def closed(self, listener: str) -> None:
        pass


def server_context(cert: Path) -> ssl.SSLContext:
    config = parse_config(f"[l]\naccept = 127.0.0.1:1\ncert = {cert}\nconnect = 127.0.0.1:2\n")
    return build_server_context(config.listeners[0])


# ------------------------------------------------------------------- the whole worker


async def held_connections(
    ctx: ssl.SSLContext, cert: Path, count: int, top: int, frames: int, burst: int, trim: bool
) -> None:
    loop = asyncio.get_running_loop()
    backend = subprocess.Popen(
        [sys.executable, "-c", BACKEND, str(burst)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    client: IdleClient | None = None
    server: asyncio.AbstractServer | None = None
    try:
        assert backend.stdout is not None
        port = int(backend.stdout.readline())
        text = f"[l]\naccept = 127.0.0.1:1\ncert = {cert}\nconnect = 127.0.0.1:{port}\n"
        runtime = ListenerRuntime(parse_config(text).listeners[0], ctx, loop, NoLimits())
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(4096)
        server = await loop.create_server(runtime.protocol_factory, sock=sock)
        client = IdleClient(sock.getsockname()[1])

        async def grow(total: int) -> int:
            assert client is not None
            held, failed = await loop.run_in_executor(None, client.open, total)
            if failed:
                print(f"  ({failed} connections failed)")
            await asyncio.sleep(0.5)  # let the last backend connects land
            if burst and trim:
                for conn in runtime.live:
                    conn.release_buffers()  # what the idle check does once it is quiet
            return held

        base_count = await grow(100)  # warm up every code path and the executor thread
        rss0, used0 = rss(), malloc_used()
        held = await grow(base_count + count) - base_count
        rss1, used1 = rss(), malloc_used()
        what = f", after a {burst:,}-byte burst from the backend" if burst else ""
        print(f"whole worker, {held} idle connections (each with its backend connection{what}):")
        print(f"  RSS                {(rss1 - rss0) / held:8.0f} B/conn")
        print(f"  malloc in use      {(used1 - used0) / held:8.0f} B/conn")
        if burst:
            started = time.perf_counter()
            _libc.malloc_trim(0)
            took = time.perf_counter() - started
            print(
                f"  (malloc_trim(0) took {took * 1e3:.1f} ms; RSS after it: "
                f"{(rss() - rss0) / held:.0f} B/conn)"
            )
        types0 = _object_types()
        tracemalloc.start(frames)
        snap0 = tracemalloc.take_snapshot()
        before = held + base_count
        held2 = await grow(before + count) - before
        gc.collect()
        snap1 = tracemalloc.take_snapshot()
        tracemalloc.stop()
        types1 = _object_types()
        stats = snap1.compare_to(snap0, "traceback" if frames > 1 else "lineno")
        total = sum(s.size_diff for s in stats)
        print(f"  Python (tracemalloc, second batch of {held2}) {total / held2:8.0f} B/conn; top:")
        for stat in stats[:top]:
            where = " < ".join(f"{Path(f.filename).name}:{f.lineno}" for f in stat.traceback)
            size, blocks = stat.size_diff / held2, stat.count_diff / held2
            print(f"    {size:7.0f} B {blocks:5.2f} blocks  {where}")
        print("  objects tracked by the GC (second batch; sys.getsizeof, B/conn):")
        for name, (number, size) in sorted(
            ((k, (v[0] - types0[k][0], v[1] - types0[k][1])) for k, v in types1.items()),
            key=lambda item: -item[1][1],
        )[:top]:
            print(f"    {size / held2:7.0f} B {number / held2:5.2f}  {name}")
    finally:
        if server is not None:
            server.close()
        if client is not None:
            client.close()
        if backend.poll() is None:
            backend.terminate()
        backend.wait()


def _object_types() -> collections.defaultdict[str, list[int]]:
    """Count and total size of the GC-tracked objects, by type name."""
    gc.collect()
    found: collections.defaultdict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for obj in gc.get_objects():
        entry = found[type(obj).__qualname__]
        entry[0] += 1
        entry[1] += sys.getsizeof(obj)
    return found


# ------------------------------------------------------------------- the TLS part alone


def _pump(source: ssl.MemoryBIO, sink: ssl.MemoryBIO) -> None:
    if source.pending:
        sink.write(source.read())


def tls_alone(ctx: ssl.SSLContext, version: ssl.TLSVersion, count: int) -> None:
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    client_ctx.maximum_version = version
    base = malloc_used()
    servers = []
    clients = []
    for _ in range(count):
        s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        servers.append((ctx.wrap_bio(s_in, s_out, server_side=True), s_in, s_out))
    fresh = malloc_used()
    for server, s_in, s_out in servers:
        c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        client = client_ctx.wrap_bio(c_in, c_out)
        for _ in range(8):
            done = 0
            for side in (client, server):
                try:
                    side.do_handshake()
                    done += 1
                except ssl.SSLWantReadError:
                    pass
            _pump(c_out, s_in)
            _pump(s_out, c_in)
            if done == 2:
                break
        clients.append(client)
    del clients
    after = malloc_used()
    started = time.perf_counter()
    for _, s_in, s_out in servers:
        _openssl_bio.trim_bio(s_in)
        _openssl_bio.trim_bio(s_out)
    per_call = (time.perf_counter() - started) / (2 * count)
    trimmed = malloc_used()
    name = "1.3" if version == ssl.TLSVersion.TLSv1_3 else "1.2"
    print(f"server SSLObject + 2 MemoryBIOs, TLS {name} (malloc in use, B/conn):")
    print(f"  before the handshake       {(fresh - base) / count:8.0f}")
    print(f"  after it                   {(after - base) / count:8.0f}")
    print(f"  after trimming both BIOs   {(trimmed - base) / count:8.0f}")
    print(f"  (trim_bio: {per_call * 1e9:.0f} ns per call; working: {_openssl_bio.available()})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--count", type=int, default=2000, help="connections per batch")
    parser.add_argument("--top", type=int, default=15, help="tracemalloc lines to show")
    parser.add_argument("--frames", type=int, default=1, help="tracemalloc frames per line")
    parser.add_argument(
        "--burst", type=int, default=0, help="bytes the backend sends first on each connection"
    )
    parser.add_argument(
        "--no-trim", action="store_true", help="measure the worker without BIO trimming"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cert = make_cert(Path(tmp), "ecdsa").combined
        ctx = server_context(cert)
        # The worker first: memory freed by tls_alone would otherwise be reused and hide
        # the worker's RSS growth.
        if args.no_trim:
            tls_endpoint.trim_bio = lambda bio: None
        uvloop.run(
            held_connections(
                ctx, cert, args.count, args.top, args.frames, args.burst, not args.no_trim
            )
        )
        _openssl_bio.available()  # the one-time check, outside the timing
        for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
            tls_alone(ctx, version, args.count)


if __name__ == "__main__":
    main()
