"""Bytes arrive exactly, both directions, TLS 1.2 and 1.3, tiny to large, many at once."""

from __future__ import annotations

import hashlib
import random
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from .harness import (
    BackendFactory,
    Certs,
    MiB,
    TunnelFactory,
    echo_handler,
    hash_exchange,
    hash_handler,
    pattern,
    recv_exactly,
)

pytestmark = pytest.mark.timeout(60)

VERSIONS = ["1.2", "1.3"]


@pytest.mark.parametrize("version", VERSIONS)
def test_echo_exact_sizes(
    version: str, certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """1 byte, around one TLS record (16 KiB) and a few records arrive exactly, both ways."""
    backend = start_backend(echo_handler)
    tunnel = start_tunnel(backend.address)
    with tunnel.connect(certs.client_context(version)) as sock:
        assert sock.version() == f"TLSv{version}"
        for size in (1, 2, 16383, 16384, 16385, 65536, 100_001):
            data = pattern(size, size)
            sock.sendall(data)
            assert recv_exactly(sock.recv, size) == data, size
        sock.unwrap()  # a clean close_notify exchange


@pytest.mark.parametrize("version", VERSIONS)
def test_record_boundaries_hash_protocol(
    version: str, certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """Upload and download of record-boundary sizes, each on its own connection."""
    backend = start_backend(hash_handler)
    tunnel = start_tunnel(backend.address)
    ctx = certs.client_context(version)
    for size in (1, 16383, 16384, 16385):
        with tunnel.connect(ctx) as sock:
            hash_exchange(sock, size, size, seed=size)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("version", VERSIONS)
def test_large_transfer(
    version: str,
    certs: Certs,
    start_tunnel: TunnelFactory,
    start_backend: BackendFactory,
) -> None:
    """256 MiB up then 256 MiB down through one connection, SHA-256 checked both ways."""
    size = 256 * MiB
    backend = start_backend(hash_handler)
    tunnel = start_tunnel(backend.address)
    started = time.monotonic()
    with tunnel.connect(certs.client_context(version), timeout=60) as sock:
        hash_exchange(sock, size, size, seed=42)
    elapsed = time.monotonic() - started
    print(f"{2 * size / MiB:.0f} MiB through the tunnel in {elapsed:.1f}s")


@pytest.mark.timeout(90)
def test_many_concurrent_connections(
    certs: Certs, start_tunnel: TunnelFactory, start_backend: BackendFactory
) -> None:
    """64 simultaneous connections (mixed TLS versions) with random payloads, SHA-256 checked."""
    backend = start_backend(hash_handler)
    # 64 client threads share one GIL: on a loaded machine (the suite runs in four
    # processes) a thread may send its ClientHello more than the harness's 1 s after the
    # connect, which the tunnel rightly answers as a handshake timeout.
    tunnel = start_tunnel(backend.address, workers=2, handshake_timeout="15s")
    rng = random.Random(1)
    jobs = [
        (VERSIONS[i % 2], rng.randrange(0, 512 * 1024), rng.randrange(0, 512 * 1024), i)
        for i in range(64)
    ]
    contexts = {v: certs.client_context(v) for v in VERSIONS}

    def one(job: tuple[str, int, int, int]) -> str:
        version, up, down, seed = job
        with tunnel.connect(contexts[version], timeout=60) as sock:
            hash_exchange(sock, up, down, seed)
            return hashlib.sha256(str(job).encode()).hexdigest()

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        results = list(pool.map(one, jobs))
    assert len(results) == len(jobs)
    backend.wait_connections(len(jobs))
