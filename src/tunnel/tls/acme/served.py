"""Which file a listener serves for its ``acme`` names: the obtained one, or a placeholder."""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile

from tunnel.tls.acme.store import StateDir, placeholder_pem, read_stored, write_private

log = logging.getLogger("tunnel.acme")

_warned: set[tuple[str, ...]] = set()
_placeholder_dir: list[str] = []  # one private directory per process, removed at exit


def _placeholder_path(names: tuple[str, ...]) -> str:
    # A directory made before privileges were dropped is not writable after: make another.
    if _placeholder_dir and not os.access(_placeholder_dir[0], os.W_OK | os.X_OK):
        _placeholder_dir.clear()
    if not _placeholder_dir:
        directory = tempfile.mkdtemp(prefix="tunnel-acme-")
        _placeholder_dir.append(directory)
        atexit.register(_remove, directory, os.getpid())
    return os.path.join(_placeholder_dir[0], f"{names[0]}.pem")


def _remove(directory: str, owner: int) -> None:
    # Only the process that made it removes it (forked workers leave with os._exit anyway).
    if os.getpid() == owner:
        shutil.rmtree(directory, ignore_errors=True)


def served_cert(names: tuple[str, ...], state_dir: str) -> str:
    """The PEM file (chain and key) to serve for ``names``.

    The certificate in ``state_dir`` when there is one (even expired or for an older name
    list: the ACME process replaces it), else a fresh self-signed placeholder.
    """
    path = StateDir(state_dir).cert(names)
    if read_stored(path) is not None:
        return path
    placeholder = _placeholder_path(names)
    write_private(placeholder, placeholder_pem(names))
    if names not in _warned:  # once per process: every reload until then would repeat it
        _warned.add(names)
        log.warning(
            "acme: no certificate for %s yet; serving a self-signed placeholder until it is "
            "obtained",
            ", ".join(names),
        )
    return placeholder
