"""Giving freed heap memory back to the kernel (tunnel._malloc)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tunnel._native import malloc as _malloc
from tunnel.config import parse_config
from tunnel.dataplane.worker import Worker
from tunnel.tls.bundle import TLSBundle

SRC = Path(__file__).resolve().parents[2] / "src"

# Big buffers interleaved with small live ones, as connections' BIO buffers are: freeing
# the big ones leaves holes that glibc does not return by itself.
SCRIPT = textwrap.dedent(
    """
    import sys
    from tunnel._native import malloc as _malloc

    def rss():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024

    big, small = [], []
    for _ in range(400):
        buffer = bytearray(100_000)
        buffer[::4096] = b"x" * len(range(0, 100_000, 4096))  # make the pages resident
        big.append(buffer)
        small.append(bytearray(600))
    del big
    before = rss()
    if sys.argv[1] == "release":
        _malloc.release_free_memory()
    print(before - rss())
    """
)


def freed_by(action: str) -> int:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, action],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(result.stdout)


def test_available_with_glibc() -> None:
    assert _malloc.available()


def test_release_gives_scattered_free_pages_back() -> None:
    assert freed_by("nothing") < 10_000_000  # the holes stay resident by themselves
    assert freed_by("release") > 30_000_000  # of the 40 MB freed


def test_a_worker_releases_periodically(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []
    monkeypatch.setattr(_malloc, "TRIM_SECONDS", 0.01)
    monkeypatch.setattr(_malloc, "release_free_memory", lambda: calls.append(0.0))
    config = parse_config("[l]\naccept = 127.0.0.1:1\ncert = /x.pem\nconnect = 127.0.0.1:2\n")
    worker = Worker(config, TLSBundle(), {})

    async def run() -> None:
        worker._trim_tick()
        for _ in range(500):  # bounded: up to 5 s
            if len(calls) >= 3:
                return
            await asyncio.sleep(0.01)

    asyncio.run(run())
    assert len(calls) >= 3
