"""Session-ticket keys from a file, shared by every Tunnel instance that reads it.

File format: one or more 80-byte keys, concatenated; each key is a 16-byte name, a 32-byte
HMAC-SHA256 key and a 32-byte AES-256 key (e.g. ``head -c 80 /dev/urandom``). The first
key encrypts new tickets; every key decrypts, so prepending a new key and keeping the old
one behind it rotates without breaking the sessions clients hold (tickets made with an
older key are renewed with the current one when they resume).

The stdlib ``ssl`` module has no API for this: :class:`TicketKeys` installs an OpenSSL
ticket callback (``SSL_CTX_set_tlsext_ticket_key_evp_cb``) from :mod:`tunnel._native.tickets`:
the C one where the extension is built (no Python runs per handshake), the ctypes one
otherwise, and hands it the keys whenever it reads them. This module is the policy (which
keys, when to re-read them); the callbacks live in ``_native``. Workers call
:meth:`TicketKeys.refresh` every few seconds, which re-reads the file when its modification
time, size or inode changed.
"""

from __future__ import annotations

import logging
import os
import ssl
import time

from tunnel._native.tickets import NAME_SIZE, new_ticket_callback

log = logging.getLogger("tunnel.tickets")

KEY_SIZE = 80
REFRESH_SECONDS = 2.0
# A file that stays broken is named again this often, not at every refresh (every 2 s in
# every worker, which buried every other line of the log).
WARN_AGAIN_SECONDS = 600.0
_clock = time.monotonic


class TicketKeyError(ValueError):
    """The ticket key file is unreadable or not a whole number of 80-byte keys."""


def parse_keys(data: bytes) -> list[tuple[bytes, bytes, bytes]]:
    """Split file contents into (name, hmac_key, aes_key) triples; raise TicketKeyError."""
    if not data or len(data) % KEY_SIZE:
        raise TicketKeyError(
            f"holds {len(data)} bytes, not a multiple of {KEY_SIZE}: "
            "write one or more 80-byte keys, e.g. head -c 80 /dev/urandom"
        )
    keys = []
    for offset in range(0, len(data), KEY_SIZE):
        key = data[offset : offset + KEY_SIZE]
        keys.append((key[:NAME_SIZE], key[NAME_SIZE:48], key[48:]))
    return keys


def _file_state(path: str) -> tuple[int, int, int]:
    stat = os.stat(path)
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


class TicketKeys:
    """The keys of one ticket key file, and the OpenSSL callback that uses them."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._state = (0, 0, 0)
        self._names = 0  # distinct key names in use
        self._warned: tuple[str, float] | None = None  # the last problem logged, and when
        self._callback = new_ticket_callback()
        self._load()

    @property
    def callback(self) -> str:
        """Which callback serves these keys: "C" or "ctypes"."""
        return self._callback.kind

    def _load(self) -> None:
        try:
            state = _file_state(self.path)
            with open(self.path, "rb") as stream:
                keys = parse_keys(stream.read())
        except OSError as exc:
            raise TicketKeyError(f"cannot read it: {exc.strerror or exc}") from None
        self._callback.set_keys(keys)
        self._state = state
        self._names = len({name for name, _, _ in keys})

    def install(self, ctx: ssl.SSLContext) -> None:
        """Make ``ctx`` encrypt and decrypt its session tickets with these keys."""
        self._callback.install(ctx)

    def refresh(self) -> bool:
        """Re-read the file if it changed; True if new keys are in use.

        A broken replacement is logged and the old keys stay in use.
        """
        try:
            if _file_state(self.path) == self._state:
                return False
            self._load()
        except (OSError, TicketKeyError) as exc:
            self._warn(str(exc))
            return False
        self._warned = None
        log.info(
            "ticket keys reloaded from %s (%d key(s), %s callback)",
            self.path,
            self._names,
            self._callback.kind,
        )
        return True

    def _warn(self, problem: str) -> None:
        now = _clock()
        if self._warned is not None:
            last, when = self._warned
            if last == problem and now - when < WARN_AGAIN_SECONDS:
                return
        self._warned = (problem, now)
        log.warning(
            "ticket_key_file %s: %s; keeping the previous keys (said again every %.0f minutes "
            "while it lasts)",
            self.path,
            problem,
            WARN_AGAIN_SECONDS / 60,
        )
