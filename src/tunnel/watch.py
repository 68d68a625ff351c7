"""Certificate file watching (``watch = yes``): notice when a file changes on disk.

Polled by the supervisor every few seconds rather than with inotify: it is cheap for a
handful of files, needs no thread, and also sees the atomic symlink swap a Kubernetes
Secret volume does (``os.stat`` follows symlinks, so a new target shows as a new inode).
"""

from __future__ import annotations

import os

from tunnel.config import Config

FileState = tuple[int, int, int] | None  # (inode, size, mtime_ns), None if unreadable


def watched_files(config: Config) -> list[str]:
    """Every certificate and key file the configuration reads, in a stable order."""
    paths: list[str] = []
    for listener in config.listeners:
        for path in (*listener.cert, listener.key):
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
