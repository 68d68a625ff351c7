"""The ACME tests' names for :mod:`harness.pebble` (Pebble and its DNS on loopback)."""

from __future__ import annotations

from harness.pebble import CHALLTESTSRV, PEBBLE, Pebble, served_certificate, wait_log

__all__ = ["CHALLTESTSRV", "PEBBLE", "Pebble", "served_certificate", "wait_log"]
