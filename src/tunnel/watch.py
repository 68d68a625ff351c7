"""Certificate file watching (``watch = yes``): notice when a file changes on disk.

Polled by the supervisor every few seconds rather than with inotify: it is cheap for a
handful of files, needs no thread, and also sees the atomic symlink swap a Kubernetes
Secret volume does (``os.stat`` follows symlinks, so a new target shows as a new inode).
"""

from __future__ import annotations

import os

from tunnel.config import Config

FileState = tuple[int, int, int] | None  # (inode, size, mtime_ns), None if unreadable


def _dir_entries(directory: str) -> list[str]:
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    return [os.path.join(directory, n) for n in names if n.endswith((".pem", ".crt"))]


def watched_files(config: Config) -> list[str]:
    """Every certificate, key, CA and CRL file the configuration reads, in a stable order.

    A ``cert_dir`` is watched itself (adding or removing a file changes its mtime) and
    with each file now in it. ``ticket_key_file`` is not here: workers re-read it on
    their own, without a reload.
    """
    paths: list[str] = []
    for listener in config.listeners:
        found: list[str | None] = [*listener.cert, listener.key, listener.client_ca]
        if listener.cert_dir is not None:
            found += [listener.cert_dir, *_dir_entries(listener.cert_dir)]
        found += listener.crl
        for path in found:
            if path is not None and path not in paths:
                paths.append(path)
    return paths


def snapshot(paths: list[str]) -> dict[str, FileState]:
    """The current state of each file."""
    states: dict[str, FileState] = {}
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            states[path] = None
        else:
            states[path] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return states


def changed(before: dict[str, FileState], after: dict[str, FileState]) -> list[str]:
    """The paths whose state differs between two snapshots."""
    return [path for path in after if before.get(path) != after[path]]
