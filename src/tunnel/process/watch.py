"""Certificate file watching (``watch = yes``): notice when a file changes on disk.

Polled by the supervisor every few seconds rather than with inotify: it is cheap for a
handful of files, needs no thread, and also sees the atomic symlink swap a Kubernetes
Secret volume does (``os.stat`` follows symlinks, so a new target shows as a new inode).
"""

from __future__ import annotations

import os
import time

from tunnel.config import Config

WATCH_INTERVAL = 2.0

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
        found: list[str | None] = [*listener.cert, listener.key, *listener.client_ca]
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


class CertWatch:
    """The supervisor's watch state: what the files looked like, and when to look again."""

    def __init__(self) -> None:
        self.enabled = False
        self.state: dict[str, FileState] = {}
        self.next_poll = 0.0

    def reset(self, config: Config) -> None:
        """Start watching ``config``'s files as they are now (after a start or reload)."""
        self.enabled = config.tunnel.watch
        self.state = snapshot(watched_files(config)) if self.enabled else {}
        self.next_poll = time.monotonic() + WATCH_INTERVAL

    def due(self, now: float) -> bool:
        """Whether it is time to poll."""
        return self.enabled and now >= self.next_poll

    def poll(self) -> list[str]:
        """The files that changed since the last look.

        What was seen is remembered even if the reload that follows fails (e.g. a key
        written after its certificate): the next change tries again instead of failing
        at every poll.
        """
        self.next_poll = time.monotonic() + WATCH_INTERVAL
        state = snapshot(list(self.state))
        moved = changed(self.state, state)
        self.state = state
        return moved
