"""Data integrity under load: 200 concurrent full-duplex connections, SHA-256 both ways."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time

import pytest
from harness.backends import Backend
from harness.certs import Certs
from harness.net import MiB
from harness.tunnel import TunnelProcess
from harness.waits import wait_until

from .support import Guard, payload, payload_digest

pytestmark = pytest.mark.timeout(180)

CONNECTIONS = 200
RECORD = 16384  # TLS plaintext record size
BOUNDARY_SIZES = [1, 2, RECORD - 1, RECORD, RECORD + 1, 2 * RECORD - 1, 2 * RECORD]
BOUNDARY_SIZES += [2 * RECORD + 1, 65535, 65536, 65537, 4 * MiB - 1, 4 * MiB]


def sizes(rng: random.Random) -> list[int]:
    """Boundary sizes first, then log-uniform sizes in 1 B .. 4 MiB (so small and large
    transfers are both common, and the whole run stays within the time budget)."""
    wanted = 2 * CONNECTIONS
    out = list(BOUNDARY_SIZES)
    while len(out) < wanted:
        out.append(min(4 * MiB, max(1, int(2 ** rng.uniform(0, 22)))))
    rng.shuffle(out)
    return out


async def one(
    address: tuple[str, int],
    certs: Certs,
    sizes: tuple[int, int, int],
    gate: asyncio.Semaphore,
    connected: list[int],
    go: asyncio.Event,
) -> int:
    up, down, seed = sizes
    version = "1.2" if seed % 2 else "1.3"
    # All handshakes first, a few at a time, then every transfer at once: this one-thread
    # client, busy with 200 transfers, could otherwise answer a handshake too late for the
    # shared tunnel's 3 s handshake timeout.
    async with gate:
        reader, writer = await asyncio.open_connection(
            *address, ssl=certs.client_context(version), server_hostname="localhost"
        )
    connected.append(seed)
    if len(connected) == CONNECTIONS:
        go.set()
    await go.wait()

    async def upload() -> None:
        writer.write(f"duplex {up} {down} {seed}\n".encode())
        for piece in payload(up, seed):
            writer.write(piece)
            await writer.drain()

    async def download() -> bytes:
        digest = hashlib.sha256()
        left = down
        while left:
            data = await reader.read(min(left, MiB))
            assert data, f"conn {seed}: EOF with {left} download bytes missing"
            digest.update(data)
            left -= len(data)
        return digest.digest()

    _, got = await asyncio.gather(upload(), download())
    assert got == payload_digest(down, seed + 1), f"conn {seed}: download corrupted"
    echo = await reader.readexactly(32)
    assert echo == payload_digest(up, seed), f"conn {seed}: upload corrupted"
    writer.write_eof() if writer.can_write_eof() else None
    extra = await reader.read()
    assert extra == b"", f"conn {seed}: {len(extra)} extra bytes"
    writer.close()
    return up + down


async def run_all(address: tuple[str, int], certs: Certs, plan: list[int]) -> int:
    gate = asyncio.Semaphore(16)
    go = asyncio.Event()
    connected: list[int] = []
    jobs = [
        one(address, certs, (plan[2 * i], plan[2 * i + 1], 1000 + i), gate, connected, go)
        for i in range(CONNECTIONS)
    ]
    return sum(await asyncio.gather(*jobs))


def test_200_full_duplex_connections(
    certs: Certs, shared: TunnelProcess, backend: Backend, guard: Guard
) -> None:
    plan = sizes(random.Random(42))
    start = time.monotonic()
    checked = asyncio.run(run_all(shared.address, certs, plan))
    elapsed = time.monotonic() - start
    records = [r for r in backend.records if str(getattr(r, "tag", "")).startswith("duplex")]
    wait_until(lambda: all(r.done.is_set() for r in records), 30, what="backends done")
    bad = [r.tag for r in records if not getattr(r, "duplex_ok", False)]  # type: ignore[attr-defined]
    assert len(records) == CONNECTIONS
    assert not bad, bad[:5]
    print(
        f"  integrity: {CONNECTIONS} connections, {checked} bytes ({checked / MiB:.1f} MiB)"
        f" checked by SHA-256, 0 lost/corrupted/extra, in {elapsed:.1f} s"
    )
    guard.check(extra_backend_conns=CONNECTIONS, max_latency=30.0)
