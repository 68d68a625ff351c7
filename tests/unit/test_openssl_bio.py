"""Trimming emptied memory BIOs (tunnel._openssl_bio)."""

from __future__ import annotations

import ctypes
import gc
import ssl

import pytest

from tunnel._native import bio as _openssl_bio
from tunnel._native.bio import available, bio_capacity, trim_bio

CHUNK = 65536


class MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            *("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks"),
            *("uordblks", "fordblks", "keepcost"),
        )
    ]


def malloc_in_use() -> int:
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    gc.collect()
    return int(libc.mallinfo2().uordblks)


def test_available_on_this_build() -> None:
    # CPython with OpenSSL 3 is what Tunnel ships for: the mechanism must work here.
    assert available()


def test_a_bio_keeps_its_largest_write_until_trimmed() -> None:
    bio = ssl.MemoryBIO()
    bio.write(b"x" * CHUNK)
    assert bio.read() == b"x" * CHUNK
    assert bio_capacity(bio) >= CHUNK  # OpenSSL does not shrink on read
    trim_bio(bio)
    assert bio_capacity(bio) == 0
    bio.write(b"after")  # a trimmed BIO works as before
    assert bio.read() == b"after"
    assert bio.pending == 0


def test_trimming_frees_the_memory() -> None:
    bios = [ssl.MemoryBIO() for _ in range(100)]
    for bio in bios:
        bio.write(b"x" * CHUNK)
        bio.read()
    before = malloc_in_use()
    for bio in bios:
        trim_bio(bio)
    freed = before - malloc_in_use()
    assert freed >= 100 * CHUNK


def test_pending_bytes_are_never_dropped() -> None:
    bio = ssl.MemoryBIO()
    bio.write(b"a" * CHUNK)
    bio.read(CHUNK - 10)
    trim_bio(bio)
    assert bio.pending == 10
    bio.write(b"b")
    assert bio.read() == b"a" * 10 + b"b"


def test_eof_survives_trimming() -> None:
    bio = ssl.MemoryBIO()
    bio.write(b"x")
    bio.read()
    bio.write_eof()
    trim_bio(bio)
    assert bio.eof


def test_without_a_verified_layout_nothing_is_done(monkeypatch: pytest.MonkeyPatch) -> None:
    _openssl_bio._functions.cache_clear()
    monkeypatch.setattr(ssl, "OPENSSL_VERSION_INFO", (1, 1, 1, 23, 15))
    try:
        assert not available()
        bio = ssl.MemoryBIO()
        bio.write(b"x" * CHUNK)
        bio.read()
        trim_bio(bio)  # silently nothing
        assert bio_capacity(bio) == -1
        bio.write(b"still works")
        assert bio.read() == b"still works"
    finally:
        monkeypatch.undo()
        _openssl_bio._functions.cache_clear()
    assert available()
