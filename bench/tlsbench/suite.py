"""What is measured: the metrics, and one measurement function per test.

A *test* runs once per (round, target) against a freshly started instance and
yields one or more *metrics*. CPU time of the terminator's process tree is
sampled around the load so that throughput can also be given per CPU-second.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import loads
from .procs import tree_cpu_seconds, tree_rss_kib


@dataclass(frozen=True)
class Metric:
    key: str
    title: str
    unit: str
    higher_is_better: bool
    per_cpu_unit: str | None = None  # None: per CPU-second is meaningless for this metric
    in_chart: bool = True


@dataclass
class Sample:
    value: float
    work: float | None = None  # amount of work done, for the per-CPU-second figure
    cpu_s: float | None = None  # terminator CPU-seconds while doing it
    note: str = ""
    other_load: float | None = None  # cores used by unrelated work meanwhile (LoadMeter)

    @property
    def per_cpu(self) -> float | None:
        if self.work is None or not self.cpu_s:
            return None
        return self.work / self.cpu_s


@dataclass(frozen=True)
class Durations:
    keepalive: int
    handshake: int
    resume: int
    bulk: int
    idle_counts: tuple[int, ...]
    handshake_clients: int = 4


@dataclass
class Endpoint:
    """Where the load goes: a TLS terminator, or the backend itself ("direct")."""

    port: int
    tls: bool
    pid: int | None  # terminator root PID (None for direct)
    workdir: Path
    wrk_script: Path

    def url(self, path: str) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}{path}"

    def cpu(self) -> float | None:
        return tree_cpu_seconds(self.pid) if self.pid else None


def _cpu_delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


# ---------------------------------------------------------------- measurements


def measure_keepalive(ep: Endpoint, d: Durations) -> dict[str, Sample]:
    cpu0 = ep.cpu()
    res = loads.run_wrk(ep.url("/small"), 50, d.keepalive, ep.wrk_script)
    cpu = _cpu_delta(cpu0, ep.cpu())
    note = f"{res.errors} errors" if res.errors else ""
    if res.requests == 0:
        raise RuntimeError(f"wrk completed no request ({res.errors} errors)")
    return {
        "keepalive_rps": Sample(res.requests / res.seconds, res.requests, cpu, note),
        "keepalive_p99_ms": Sample(res.p99_ms),
    }


def _measure_bulk(ep: Endpoint, d: Durations, streams: int, key: str) -> dict[str, Sample]:
    cpu0 = ep.cpu()
    res = loads.run_wrk(ep.url("/big"), streams, d.bulk, ep.wrk_script)
    cpu = _cpu_delta(cpu0, ep.cpu())
    megabytes = res.bytes / 1e6
    if megabytes < 1:
        raise RuntimeError(f"bulk transfer moved {res.bytes} bytes ({res.errors} errors)")
    return {key: Sample(megabytes / res.seconds, megabytes, cpu)}


def measure_bulk1(ep: Endpoint, d: Durations) -> dict[str, Sample]:
    return _measure_bulk(ep, d, 1, "bulk1_mbs")


def measure_bulk4(ep: Endpoint, d: Durations) -> dict[str, Sample]:
    return _measure_bulk(ep, d, 4, "bulk4_mbs")


def _measure_handshakes(ep: Endpoint, d: Durations, key: str) -> dict[str, Sample]:
    cpu0 = ep.cpu()
    res = loads.run_s_time(ep.port, d.handshake, d.handshake_clients, reuse=False)
    cpu = _cpu_delta(cpu0, ep.cpu())
    if res.connections == 0:
        raise RuntimeError("no handshake completed")
    note = f"{res.reused} unexpectedly resumed" if res.reused else ""
    return {key: Sample(res.connections / res.seconds, res.connections, cpu, note)}


def measure_hs_ecdsa(ep: Endpoint, d: Durations) -> dict[str, Sample]:
    return _measure_handshakes(ep, d, "hs_ecdsa")


def measure_hs_rsa(ep: Endpoint, d: Durations) -> dict[str, Sample]:
    return _measure_handshakes(ep, d, "hs_rsa")


def measure_resume(ep: Endpoint, d: Durations) -> dict[str, Sample]:
    cpu0 = ep.cpu()
    res = loads.run_s_time(ep.port, d.resume, d.handshake_clients, reuse=True)
    cpu = _cpu_delta(cpu0, ep.cpu())
    if res.connections == 0:
        raise RuntimeError("no connection completed")
    share = res.reused / res.connections
    note = "" if share > 0.95 else f"only {share:.0%} of reconnects resumed"
    return {
        "resume_rps": Sample(res.connections / res.seconds, res.connections, cpu, note),
        "resume_share": Sample(100 * share),
    }


def measure_idle(ep: Endpoint, d: Durations) -> dict[str, Sample]:
    """RSS growth of the terminator per held idle TLS connection, at each count tier."""
    assert ep.pid is not None
    out: dict[str, Sample] = {}
    client = loads.IdleClient(ep.port)
    try:
        time.sleep(0.3)
        base = tree_rss_kib(ep.pid)
        for tier, count in enumerate(d.idle_counts):
            held, failed = client.open(count)
            if held == 0:
                raise RuntimeError(f"no idle connection could be opened ({failed} failed)")
            time.sleep(0.5)
            grown = tree_rss_kib(ep.pid) - base
            note = f"held {held} of {count}" if held < count else ""
            out[f"idle_kib_{tier}"] = Sample(grown / held, note=note)
            if held < 0.9 * count:
                break  # the next, larger tier would only fail more slowly
    finally:
        client.close()
    return out


@dataclass(frozen=True)
class Test:
    key: str
    title: str
    run: Callable[[Endpoint, Durations], dict[str, Sample]]
    cert: str = "ecdsa"
    direct: bool = False  # also run against the backend without TLS
    cpu_bound: bool = True  # False: other load on the machine hardly matters (no re-measuring)
    metrics: tuple[Metric, ...] = field(default_factory=tuple)


def idle_metric_title(count: int) -> str:
    return f"Memory per idle TLS connection ({count:,} held)"


def build_tests(d: Durations) -> list[Test]:
    idle_metrics = tuple(
        Metric(f"idle_kib_{i}", idle_metric_title(n), "KiB/conn", False)
        for i, n in enumerate(d.idle_counts)
    )
    return [
        Test(
            "keepalive",
            "keep-alive requests",
            measure_keepalive,
            direct=True,
            metrics=(
                Metric(
                    "keepalive_rps",
                    "Keep-alive req/s (wrk -c50, 100 B)",
                    "req/s",
                    True,
                    "req/CPU-s",
                ),
                Metric("keepalive_p99_ms", "Keep-alive p99 latency", "ms", False),
            ),
        ),
        Test(
            "hs_ecdsa",
            "full TLS 1.3 handshakes, ECDSA",
            measure_hs_ecdsa,
            metrics=(
                Metric(
                    "hs_ecdsa", "Full TLS 1.3 handshakes/s, ECDSA P-256", "hs/s", True, "hs/CPU-s"
                ),
            ),
        ),
        Test(
            "hs_rsa",
            "full TLS 1.3 handshakes, RSA",
            measure_hs_rsa,
            cert="rsa",
            metrics=(
                Metric("hs_rsa", "Full TLS 1.3 handshakes/s, RSA-2048", "hs/s", True, "hs/CPU-s"),
            ),
        ),
        Test(
            "resume",
            "resumed TLS 1.3 reconnects",
            measure_resume,
            metrics=(
                Metric(
                    "resume_rps",
                    "Resumed reconnects/s (tickets, + 1 request)",
                    "conn/s",
                    True,
                    "conn/CPU-s",
                ),
                Metric(
                    "resume_share",
                    "Share of reconnects actually resumed",
                    "%",
                    True,
                    in_chart=False,
                ),
            ),
        ),
        Test(
            "bulk1",
            "bulk download, 1 stream",
            measure_bulk1,
            direct=True,
            metrics=(Metric("bulk1_mbs", "Bulk download, 1 stream", "MB/s", True, "MB/CPU-s"),),
        ),
        Test(
            "bulk4",
            "bulk download, 4 streams",
            measure_bulk4,
            direct=True,
            metrics=(Metric("bulk4_mbs", "Bulk download, 4 streams", "MB/s", True, "MB/CPU-s"),),
        ),
        Test("idle", "idle connection memory", measure_idle, metrics=idle_metrics, cpu_bound=False),
    ]
