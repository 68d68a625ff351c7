"""Give back the buffer of an emptied ``ssl.MemoryBIO`` (OpenSSL's memory BIO never shrinks).

Theory of operation: an OpenSSL memory BIO keeps its data in a ``BUF_MEM`` that grows to
the largest amount ever written to it (a third more, in fact) and keeps that capacity
after it has been read empty. For a relayed connection that is the server's handshake
flight and the ClientHello — about 1.6 KiB per idle connection after a TLS 1.3 handshake
with an ECDSA certificate — and up to ~85 KiB per BIO once a 64 KiB chunk went through.
:func:`trim_bio` hands the BIO a new, empty ``BUF_MEM`` (``BIO_C_SET_BUF_MEM`` with
``BIO_CLOSE``, which frees the old one); the next write allocates what it needs.

A CPython ``ssl.MemoryBIO`` object is ``PyObject_HEAD`` followed by the ``BIO *``. As in
:mod:`tunnel._native.openssl`, that layout is an implementation detail, so it is verified once
(OpenSSL 3, the pointer is a memory BIO whose pending count matches the object's, and a
trimmed BIO still reads and writes correctly); if anything does not match,
:func:`trim_bio` does nothing. Tests check that trimming frees the memory and that the
relay still works.
"""

from __future__ import annotations

import ctypes
import ssl
import sys
from collections.abc import Callable
from functools import cache
from typing import Any

from tunnel._native.openssl import libcrypto

_BIO_TYPE_MEM = 1 | 0x0400  # BIO_TYPE_SOURCE_SINK
_BIO_CTRL_PENDING = 10
_BIO_C_SET_BUF_MEM = 114
_BIO_C_GET_BUF_MEM_PTR = 115
_BIO_CLOSE = 1
_HEAD = sys.getsizeof(object())  # PyObject_HEAD: the BIO * follows it

_CFunc = Callable[..., Any]  # a ctypes foreign function


def _bio_pointer(bio: ssl.MemoryBIO) -> int | None:
    return ctypes.c_void_p.from_address(id(bio) + _HEAD).value


def _setup() -> tuple[_CFunc, _CFunc] | None:
    """The (BIO_ctrl, BUF_MEM_new) functions, if the mechanism checks out; else None."""
    if ssl.OPENSSL_VERSION_INFO[0] != 3 or sys.implementation.name != "cpython":
        return None
    try:
        lib = libcrypto()
        bio_ctrl, buf_new, method_type = lib.BIO_ctrl, lib.BUF_MEM_new, lib.BIO_method_type
    except (OSError, AttributeError):
        return None
    bio_ctrl.restype = ctypes.c_long
    bio_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    buf_new.restype = ctypes.c_void_p
    buf_new.argtypes = []
    method_type.restype = ctypes.c_int
    method_type.argtypes = [ctypes.c_void_p]
    probe = ssl.MemoryBIO()
    probe.write(b"x" * 1000)
    pointer = _bio_pointer(probe)
    if (
        not pointer
        or method_type(pointer) != _BIO_TYPE_MEM
        or bio_ctrl(pointer, _BIO_CTRL_PENDING, 0, None) != probe.pending
    ):
        return None
    probe.read()
    if not _replace_buffer(bio_ctrl, buf_new, pointer):
        return None
    probe.write(b"after")
    if probe.read() != b"after" or probe.pending:
        return None
    return bio_ctrl, buf_new


def _replace_buffer(bio_ctrl: _CFunc, buf_new: _CFunc, pointer: int) -> bool:
    fresh = buf_new()
    if not fresh:
        return False
    return bool(bio_ctrl(pointer, _BIO_C_SET_BUF_MEM, _BIO_CLOSE, fresh) == 1)


@cache
def _functions() -> tuple[_CFunc, _CFunc] | None:
    return _setup()


def available() -> bool:
    """Whether :func:`trim_bio` can work here (checked once, on first use)."""
    return _functions() is not None


def trim_bio(bio: ssl.MemoryBIO) -> None:
    """Free the buffer of ``bio`` if it is empty (no pending bytes); else do nothing."""
    functions = _functions()
    if functions is None or bio.pending:
        return
    pointer = _bio_pointer(bio)
    if pointer:
        _replace_buffer(functions[0], functions[1], pointer)


class _BufMem(ctypes.Structure):
    # struct buf_mem_st (OpenSSL 3): length, data, max, flags
    _fields_ = (
        ("length", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("max", ctypes.c_size_t),
        ("flags", ctypes.c_ulong),
    )


def bio_capacity(bio: ssl.MemoryBIO) -> int:
    """The bytes allocated for ``bio``'s buffer (for tests and diagnostics; -1 if unknown)."""
    functions = _functions()
    pointer = _bio_pointer(bio)
    if functions is None or not pointer:
        return -1
    buf = ctypes.c_void_p()
    if functions[0](pointer, _BIO_C_GET_BUF_MEM_PTR, 0, ctypes.byref(buf)) != 1 or not buf.value:
        return -1
    return int(_BufMem.from_address(buf.value).max)
