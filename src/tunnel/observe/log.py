"""Logging setup: stderr, syslog or a file; level and facility from the configuration.

With ``log_target = file`` the file is opened in append mode and reopened by
:func:`reopen_logs` (SIGUSR1, in the supervisor and every worker) so that logrotate can
move it away and a new file is started.

Everything in Tunnel logs through loggers named ``tunnel.*``; :func:`setup_logging`
attaches one handler to the ``tunnel`` logger (replacing any earlier one, so it may be
called again, e.g. after a reload). Nothing in Tunnel logs the contents of files, so
private keys never reach a log.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
from typing import TYPE_CHECKING

from tunnel.config import LOG_LEVELS, TunnelSettings

if TYPE_CHECKING:
    import logging.handlers

ROOT_LOGGER = "tunnel"
DEV_LOG = "/dev/log"
STDERR_FORMAT = "%(asctime)s tunnel[%(process)d] %(levelname)s %(name)s: %(message)s"
SYSLOG_FORMAT = "tunnel[%(process)d]: %(levelname)s %(name)s: %(message)s"

# The names the configuration accepts, mapped to the stdlib's numbers (DEBUG, ...).
_LEVELS = {name: logging.getLevelNamesMapping()[name.upper()] for name in LOG_LEVELS}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a connection summary's fields become its keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "pid": record.process,
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "conn", None)
        if isinstance(fields, dict):
            entry["event"] = "conn"
            entry.update(fields)
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))


class _PrefixedJson(JsonFormatter):
    # Syslog needs its "tag[pid]: " before the JSON object.
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return (self.prefix % {"process": record.process}) + text if self.prefix else text


def level_number(level: str) -> int:
    """The ``logging`` level for a config name (``debug`` .. ``error``); ValueError if unknown."""
    try:
        return _LEVELS[level.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}: use {', '.join(_LEVELS)}") from None


def _facility_number(facility: str) -> int:
    # logging.handlers (and the pickle and queue modules it brings) loads only for syslog.
    import logging.handlers

    names = logging.handlers.SysLogHandler.facility_names
    try:
        return names[facility.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown syslog facility {facility!r}") from None


def _stderr_handler() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(STDERR_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    return handler


class ReopenableFileHandler(logging.FileHandler):
    """A log file that :meth:`reopen` closes and opens again at the same path."""

    def reopen(self) -> None:
        """Start writing to whatever file is now at the path (after a rotation)."""
        self.acquire()
        try:
            if self.stream is not None:
                self.stream.close()
            self.stream = self._open()
        finally:
            self.release()


def _file_handler(path: str) -> logging.Handler:
    handler = ReopenableFileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter(STDERR_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    return handler


def reopen_logs() -> None:
    """Reopen Tunnel's log file, if it logs to one (no-op for stderr and syslog)."""
    for handler in logging.getLogger(ROOT_LOGGER).handlers:
        if isinstance(handler, ReopenableFileHandler):
            handler.reopen()


def _unix_reachable(path: str) -> OSError | None:
    """None if a syslog receiver accepts on the Unix socket ``path``, else why not."""
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_UNIX, kind) as probe:
            try:
                probe.connect(path)
            except OSError as exc:
                error = exc
            else:
                return None
    return error


def _syslog_handler(
    facility: str, address: str | tuple[str, int], append_nul: bool
) -> logging.Handler:
    import logging.handlers  # see _facility_number

    number = _facility_number(facility)
    handler: logging.handlers.SysLogHandler
    if isinstance(address, tuple):
        handler = logging.handlers.SysLogHandler(
            address=address, facility=number, socktype=socket.SOCK_DGRAM
        )
    elif address == DEV_LOG and _unix_reachable(address) is not None:
        # The default, and no syslog daemon listens there: try the traditional UDP port.
        handler = logging.handlers.SysLogHandler(
            address=("localhost", 514), facility=number, socktype=socket.SOCK_DGRAM
        )
    else:
        # The stdlib handler ignores a receiver that is not there (and later drops every
        # message); a socket named in the configuration must work at start instead.
        problem = _unix_reachable(address) if address != DEV_LOG else None
        if problem is not None:
            raise problem
        handler = logging.handlers.SysLogHandler(address=address, facility=number)
    # The stdlib ends every datagram with a NUL (an old syslogd habit); RFC 3164/5424
    # receivers show it as a stray character, so it is only sent when asked for.
    handler.append_nul = append_nul
    handler.setFormatter(logging.Formatter(SYSLOG_FORMAT))
    return handler


def setup_from_settings(settings: TunnelSettings, level: str | None = None) -> None:
    """:func:`setup_logging` from the ``[tunnel]`` section (``level`` overrides its own)."""
    setup_logging(
        level or settings.log_level,
        settings.log_target,
        settings.log_facility,
        settings.log_file,
        settings.log_format,
        settings.log_syslog_address,
        connections=settings.log_connections,
    )


def setup_logging(
    level: str = "info",
    target: str = "stderr",
    facility: str = "daemon",
    log_file: str | None = None,
    log_format: str = "text",
    syslog_address: str | tuple[str, int] = DEV_LOG,
    *,
    syslog_nul: bool = False,
    connections: bool = True,
) -> None:
    """Send Tunnel's logs to ``target`` (``stderr``, ``syslog`` or ``file``) at ``level``.

    ``syslog_address`` is where ``syslog`` sends to: a Unix socket path or a UDP
    ``(host, port)``; ``syslog_nul`` ends each datagram with a NUL byte, as receivers
    from before RFC 3164 expect (off by default). Idempotent: handlers installed by an
    earlier call are closed and replaced.
    ``connections=False`` drops the summary line of each connection (``tunnel.conn`` at
    INFO and below) and keeps every other line, as ``log_connections = no`` asks.
    Raises ValueError for an unknown level, target or facility (or ``file`` without
    ``log_file``), OSError when the log file cannot be opened or a configured syslog
    socket does not accept.
    """
    number = level_number(level)
    kind = target.strip().lower()
    if kind == "stderr":
        handler = _stderr_handler()
    elif kind == "syslog":
        handler = _syslog_handler(facility, syslog_address, syslog_nul)
    elif kind == "file" and log_file:
        handler = _file_handler(log_file)
    elif kind == "file":
        raise ValueError("log target 'file' needs a log_file")
    else:
        raise ValueError(f"unknown log target {target!r}: use stderr, syslog or file")
    if log_format == "json":
        prefix = "tunnel[%(process)d]: " if kind == "syslog" else ""
        handler.setFormatter(_PrefixedJson(prefix))
    elif log_format != "text":
        raise ValueError(f"unknown log format {log_format!r}: use text or json")
    logger = logging.getLogger(ROOT_LOGGER)
    for old in list(logger.handlers):
        logger.removeHandler(old)
        old.close()
    logger.addHandler(handler)
    logger.setLevel(number)
    logger.propagate = False
    conn = logging.getLogger(f"{ROOT_LOGGER}.conn")
    conn.setLevel(logging.NOTSET if connections else max(number, logging.WARNING))
