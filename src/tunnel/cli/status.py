"""``tunnel status``: read a running Tunnel's admin endpoint and summarise it for a human.

:func:`summarise` is pure (Prometheus text and the ``/readyz`` answer in, lines out) so
that it can be tested byte for byte against what :mod:`tunnel.observe.metrics` renders;
:func:`fetch` is the thin I/O part: two HTTP GETs with a short timeout; :func:`cmd_status`
prints. The exit code is 0 only when Tunnel answers that it is ready.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from tunnel.cli.common import EXIT_FAILURE, EXIT_OK, UsageError, report
from tunnel.config import Address, ConfigValueError, load_config, parse_address
from tunnel.errors import TunnelError
from tunnel.tls.expiry import expiry_warning

TIMEOUT_SECONDS = 3.0

Labels = tuple[tuple[str, str], ...]
Samples = Mapping[tuple[str, Labels], float]

# A listening address that means "every interface" is reached through loopback.
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "*": "127.0.0.1"}


class StatusUnavailable(TunnelError):
    """The admin endpoint could not be read."""


@dataclass(frozen=True, slots=True)
class Reply:
    """What the admin endpoint answered: ``/readyz`` status and text, ``/metrics`` text."""

    ready_status: int
    ready_text: str
    metrics_text: str


def parse_samples(text: str) -> dict[tuple[str, Labels], float]:
    """Prometheus text exposition -> ``{(sample name, sorted labels): value}``."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _by_name(samples: Samples, name: str) -> list[tuple[dict[str, str], float]]:
    return [(dict(labels), value) for (n, labels), value in samples.items() if n == name]


def _total(samples: Samples, name: str) -> int:
    return int(sum(value for _, value in _by_name(samples, name)))


def _count(n: float) -> str:
    return f"{int(n):,}".replace(",", " ")


def _listener_lines(samples: Samples) -> list[str]:
    stats: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for labels, value in _by_name(samples, "tunnel_connections_accepted_total"):
        stats[labels["listener"]]["accepted"] += value
    for labels, value in _by_name(samples, "tunnel_connections_active"):
        stats[labels["listener"]]["active"] += value
    for labels, value in _by_name(samples, "tunnel_handshakes_total"):
        outcome = "ok" if labels.get("result") == "ok" else "failed"
        stats[labels["listener"]][outcome] += value
    for labels, value in _by_name(samples, "tunnel_bytes_total"):
        stats[labels["listener"]][labels.get("direction", "in")] += value
    return [
        f"  listener [{name}]: accepted {_count(s['accepted'])}, active {_count(s['active'])}; "
        f"handshakes ok {_count(s['ok'])}, failed {_count(s['failed'])}; "
        f"bytes in {_count(s['in'])}, out {_count(s['out'])}"
        for name, s in sorted(stats.items())
    ]


def _pool_lines(samples: Samples) -> tuple[list[str], list[str]]:
    """One line per backend pool (members up of all), a warning per member down."""
    pools: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for labels, up in _by_name(samples, "tunnel_backend_up"):
        pools[labels.get("pool", "?")].append((labels.get("address", "?"), up))
    lines, warnings = [], []
    for pool, members in sorted(pools.items()):
        down = sorted(address for address, up in members if not up)
        lines.append(
            f"  backend [{pool}]: {len(members) - len(down)} of {len(members)} address(es) up"
            + (f"; down: {', '.join(down)}" if down else "")
        )
        warnings += [f"WARN backend [{pool}] {address}: down" for address in down]
    return lines, warnings


def _cert_lines(samples: Samples, now: float) -> tuple[list[str], list[str]]:
    lines, warnings = [], []
    certs = sorted(
        (labels.get("listener", "?"), labels.get("path", "?"), when)
        for labels, when in _by_name(samples, "tunnel_certificate_not_after_seconds")
    )
    today = datetime.datetime.fromtimestamp(now, datetime.UTC)
    for listener, path, when in certs:
        days = (when - now) / 86400
        date = datetime.datetime.fromtimestamp(when, datetime.UTC)
        lines.append(f"  cert [{listener}] {path}: expires {date:%Y-%m-%d} ({days:.0f} days)")
        if (warning := expiry_warning(listener, path, date, today)) is not None:
            warnings.append(warning)
    return lines, warnings


def _label_text(labels: Mapping[str, str]) -> str:
    # The listener or backend first: it is what a reader looks for.
    keys = sorted(labels, key=lambda k: (k not in ("listener", "backend"), k))
    return " ".join(f"{key}={labels[key]}" for key in keys)


def counter_lines(text: str) -> list[str]:
    """Every counter of the exposition: its total, then each labelled value that is not 0."""
    lines = ["  counters (total, then by label):"]
    families = sorted(text_string_to_metric_families(text), key=lambda f: f.name)
    for family in families:
        if family.type != "counter":
            continue
        samples = [s for s in family.samples if s.name == f"{family.name}_total"]
        short = family.name.removeprefix("tunnel_")
        lines.append(f"    {short}: {_count(sum(s.value for s in samples))}")
        labelled = sorted((_label_text(s.labels), s.value) for s in samples if s.labels)
        lines += [f"      {labels}: {_count(value)}" for labels, value in labelled if value]
    return lines if len(lines) > 1 else []


def summarise(where: str, reply: Reply, now: float) -> tuple[list[str], list[str]]:
    """The lines ``tunnel status`` prints, and its warnings, for the endpoint at ``where``.

    ``now`` is the current Unix time (certificate expiry is counted from it).
    """
    samples = parse_samples(reply.metrics_text)
    state = "ready" if reply.ready_status == 200 else reply.ready_text.strip() or "not ready"
    workers = {labels.get("state"): value for labels, value in _by_name(samples, "tunnel_workers")}
    reloads = ", ".join(
        f"{labels.get('result', '?')} {_count(n)}"
        for labels, n in sorted(_by_name(samples, "tunnel_reloads_total"), key=str)
    )
    lines = [
        f"Tunnel at {where}: {state}",
        f"  workers: {_count(workers.get('configured', 0))} configured, "
        f"{_count(workers.get('reporting', 0))} reporting; "
        f"{_count(_total(samples, 'tunnel_worker_restarts_total'))} restarts"
        + (f"; reloads: {reloads}" if reloads else ""),
        f"  active connections: {_count(_total(samples, 'tunnel_connections_active'))}",
        "  handshake failures in the last minute: "
        f"{_count(_total(samples, 'tunnel_handshake_failures_last_minute'))}",
    ]
    bytes_by: dict[str, float] = defaultdict(float)
    for labels, value in _by_name(samples, "tunnel_bytes_total"):
        bytes_by[labels.get("direction", "in")] += value
    lines.append(
        f"  bytes: in {_count(bytes_by['in'])} (from clients), "
        f"out {_count(bytes_by['out'])} (to clients)"
    )
    lines += _listener_lines(samples)
    pool_lines, pool_warnings = _pool_lines(samples)
    lines += pool_lines
    cert_lines, warnings = _cert_lines(samples, now)
    warnings = pool_warnings + warnings
    acme = _acme_lines(samples, now)
    return lines + cert_lines + acme + counter_lines(reply.metrics_text), warnings


def _acme_lines(samples: Samples, now: float) -> list[str]:
    orders = {
        labels.get("result", "?"): n for labels, n in _by_name(samples, "tunnel_acme_orders_total")
    }
    renewals = sorted(
        (labels.get("names", "?"), when)
        for labels, when in _by_name(samples, "tunnel_acme_renewal_at_seconds")
    )
    if not orders and not renewals:
        return []
    lines = [
        "  acme orders: "
        + ", ".join(f"{result} {_count(n)}" for result, n in sorted(orders.items()))
    ]
    for names, when in renewals:
        date = datetime.datetime.fromtimestamp(when, datetime.UTC)
        days = max(0.0, (when - now) / 86400)
        lines.append(f"  acme {names}: next order {date:%Y-%m-%d %H:%M} UTC (in {days:.1f} days)")
    return lines


def target(address: Address) -> tuple[str, int]:
    """Where to connect to reach an endpoint listening on ``address``."""
    return _WILDCARDS.get(address.host, address.host), address.port


def _get(host: str, port: int, path: str, timeout: float) -> tuple[int, str]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        conn.close()


def fetch(address: Address, timeout: float = TIMEOUT_SECONDS) -> Reply:
    """GET ``/readyz`` and ``/metrics``; StatusUnavailable says why when it cannot."""
    host, port = target(address)
    try:
        ready_status, ready_text = _get(host, port, "/readyz", timeout)
        status, metrics_text = _get(host, port, "/metrics", timeout)
    except (OSError, http.client.HTTPException) as exc:
        why = "no answer in time" if isinstance(exc, TimeoutError) else str(exc) or repr(exc)
        raise StatusUnavailable(
            f"cannot read the admin endpoint at {address}: {why}; is Tunnel running with "
            f"'admin = {address}' in [tunnel]? (start it, or give --admin HOST:PORT)"
        ) from None
    if status != 200:
        raise StatusUnavailable(
            f"the admin endpoint at {address} answered /metrics with HTTP {status}: "
            "is that address really Tunnel's admin endpoint?"
        )
    return Reply(ready_status, ready_text, metrics_text)


def _admin_address(args: argparse.Namespace) -> Address:
    if args.admin is not None:
        try:
            address = parse_address(args.admin)
        except ConfigValueError as exc:
            raise UsageError(f"--admin: {exc}") from None
        if address.kind != "tcp":
            raise UsageError("--admin needs HOST:PORT (the [tunnel] admin address)")
        return address
    if args.config is None:
        raise UsageError("give -c FILE (its [tunnel] admin address) or --admin HOST:PORT")
    config = load_config(args.config)
    if config.tunnel.admin is None:
        # Not a mistake in the file, but nothing to read: a runtime failure (exit 1).
        raise TunnelError(
            f"{config.path}: [tunnel] admin is off, so there is no endpoint to read "
            "(set e.g. 'admin = 127.0.0.1:9090' and restart Tunnel)"
        )
    return config.tunnel.admin


def cmd_status(args: argparse.Namespace) -> int:
    """``tunnel status``: summarise a running Tunnel; exit 1 unless it is ready."""
    address = _admin_address(args)
    reply = fetch(address)
    lines, warnings = summarise(str(address), reply, datetime.datetime.now().timestamp())
    report(lines, warnings)
    return EXIT_OK if reply.ready_status == 200 else EXIT_FAILURE
