"""The system tests' names for :mod:`harness.service` (foreground or daemon, one handle)."""

from __future__ import annotations

from harness.service import MODES, Service, start_service, stopping_all

__all__ = ["MODES", "Service", "start_service", "stopping_all"]
