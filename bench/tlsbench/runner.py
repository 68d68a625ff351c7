"""Orchestration: start instances, run every test round by round, collect samples."""

from __future__ import annotations

import itertools
import re
import shutil
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import loads
from .backend import SMALL_BODY, Backend
from .certs import CertFiles
from .procs import LoadMeter, Registry, free_port, wait_for_port
from .suite import Durations, Endpoint, Sample, Test
from .targets import Setup, Target, tunnel_data_plane

NOISY_CORES = 0.25  # flag measurements during which other work used more CPU than this
RETRY_CORES = 0.5  # ... and measure again (``retries`` times) above this
RETRY_PAUSE = 2.0


class StartError(RuntimeError):
    """The terminator did not come up."""


@dataclass
class TargetState:
    name: str
    status: str = "ok"  # ok | failed | unavailable
    error: str = ""
    resumption: str = ""
    cipher: str = ""
    start_failures: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class Collected:
    samples: dict[str, dict[str, list[Sample]]] = field(default_factory=dict)
    states: dict[str, TargetState] = field(default_factory=dict)

    def add(self, target: str, results: dict[str, Sample]) -> None:
        for key, sample in results.items():
            self.samples.setdefault(key, {}).setdefault(target, []).append(sample)


@dataclass
class Bench:
    registry: Registry
    tmp: Path
    backend: Backend
    certs: dict[str, CertFiles]
    durations: Durations
    workers: int
    rounds: int
    targets: list[Target]
    retries: int = 1
    retry_budget_s: float = 120.0  # total time re-measurements may add to the run
    collected: Collected = field(default_factory=Collected)
    _ids: Iterator[int] = field(default_factory=itertools.count)
    _t0: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.wrk_script = loads.write_wrk_script(self.tmp)
        for target in self.targets:
            self.collected.states.setdefault(target.name, TargetState(target.name))

    # ------------------------------------------------------------ helpers

    def log(self, message: str) -> None:
        print(f"[{time.monotonic() - self._t0:5.0f}s] {message}", flush=True)

    def usable(self, target: Target) -> bool:
        return self.collected.states[target.name].status == "ok"

    @contextmanager
    def instance(self, target: Target, cert: str) -> Iterator[Endpoint]:
        """A freshly started ``target`` (or the bare backend for "direct")."""
        if target.launch is None:
            yield Endpoint(self.backend.port, False, None, self.tmp, self.wrk_script)
            return
        workdir = self.tmp / f"{target.name}-{next(self._ids)}"
        workdir.mkdir()
        port = free_port()
        setup = Setup(workdir, port, self.backend.port, self.certs[cert], self.workers)
        launch = target.launch(setup)
        managed = self.registry.start(
            target.name, launch.argv, workdir / "output.log", env=launch.env
        )
        try:
            try:
                wait_for_port(managed, port, timeout=20)
            except RuntimeError as exc:
                raise StartError(str(exc)) from exc
            yield Endpoint(port, True, managed.pid, workdir, self.wrk_script)
            if not managed.alive():
                raise RuntimeError(f"exited during the test: {managed.log_tail(3)}")
        finally:
            self.registry.stop(managed)
            shutil.rmtree(workdir, ignore_errors=True)

    # ------------------------------------------------------------ preflight

    def preflight(self) -> None:
        """Start each target once: does it proxy a request? does it resume sessions?"""
        for target in self.targets:
            if not self.usable(target) or target.launch is None:
                continue
            state = self.collected.states[target.name]
            try:
                with self.instance(target, "ecdsa") as ep:
                    fetch_small(ep.port)
                    resumed, detail = loads.check_resumption(ep.port, ep.workdir)
                    if target.name == "tunnel":
                        self.log(f"preflight tunnel: data plane {tunnel_data_plane(ep.workdir)}")
            except Exception as exc:
                state.status, state.error = "failed", _short(exc)
                self.log(f"preflight {target.name}: FAILED: {state.error}")
                continue
            state.resumption = ("yes: " if resumed else "NO: ") + detail
            cipher = re.search(r"Cipher is (\S+)", detail)
            state.cipher = cipher.group(1) if cipher else "?"
            self.log(f"preflight {target.name}: ok, session resumption {state.resumption}")

    # ------------------------------------------------------------ measuring

    def run_test(self, test: Test) -> None:
        for rnd in range(self.rounds):
            targets = [t for t in self.targets if (t.is_tls or test.direct) and self.usable(t)]
            shift = rnd % max(1, len(targets))
            for target in targets[shift:] + targets[:shift]:  # rotate to spread order bias
                if self.usable(target):
                    self._measure(test, target, rnd)

    def _measure(self, test: Test, target: Target, rnd: int) -> None:
        """One sample; measured again (after a pause) if unrelated work disturbed it.

        Of several attempts, the least disturbed one is kept.
        """
        prefix = f"{test.key:<9} round {rnd + 1}/{self.rounds} {target.name:<8}"
        best: tuple[dict[str, Sample], float] | None = None
        for attempt in range(1 + self.retries):
            started = time.monotonic()
            measured = self._measure_once(test, target, prefix)
            if attempt:
                self.retry_budget_s -= time.monotonic() - started
            if measured is None:
                return
            if best is None or measured[1] < best[1]:
                best = measured
            calm = best[1] <= RETRY_CORES or not test.cpu_bound
            if calm or attempt == self.retries or self.retry_budget_s <= 0:
                break
            self.log(f"{prefix}: other load {measured[1]:.2f} cores, measuring again")
            started = time.monotonic()
            time.sleep(RETRY_PAUSE)
            self.retry_budget_s -= time.monotonic() - started
        assert best is not None
        results, other = best
        for sample in results.values():
            sample.other_load = other
        self.collected.add(target.name, results)
        noisy = other > NOISY_CORES and test.cpu_bound
        busy = f" [other load {other:.2f} cores]" if noisy else ""
        self.log(f"{prefix}: {describe(test, results)}{busy}")

    def _measure_once(
        self, test: Test, target: Target, prefix: str
    ) -> tuple[dict[str, Sample], float] | None:
        """(results, other load in cores), or None after logging a failure."""
        state = self.collected.states[target.name]
        try:
            with self.instance(target, test.cert) as ep:
                meter = LoadMeter([self.backend.managed.pid] + ([ep.pid] if ep.pid else []))
                meter.start()
                results = test.run(ep, self.durations)
                other = meter.other_cores()
        except StartError as exc:
            state.start_failures += 1
            state.errors.append(f"{test.key}: {_short(exc)}")
            if state.start_failures >= 2:
                state.status, state.error = "failed", _short(exc)
            self.log(f"{prefix}: FAILED to start: {_short(exc)}")
            return None
        except Exception as exc:
            state.errors.append(f"{test.key}: {_short(exc)}")
            self.log(f"{prefix}: FAILED: {_short(exc)}")
            return None
        return results, other


def describe(test: Test, results: dict[str, Sample]) -> str:
    parts = []
    for metric in test.metrics:
        sample = results.get(metric.key)
        if sample is None:
            continue
        text = f"{fmt(sample.value)} {metric.unit}"
        if sample.cpu_s is not None:
            text += f" (cpu {sample.cpu_s:.2f}s)"
        if sample.note:
            text += f" [{sample.note}]"
        parts.append(text)
    return ", ".join(parts)


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def fetch_small(port: int) -> None:
    """GET /small through the terminator; raise unless the backend's body comes back."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.options |= ssl.OP_IGNORE_UNEXPECTED_EOF
    request = b"GET /small HTTP/1.0\r\nHost: localhost\r\n\r\n"
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw) as conn,
    ):
        conn.sendall(request)
        data = b""
        while len(data) < 4096:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
    if not data.endswith(SMALL_BODY):
        raise RuntimeError(f"unexpected response through the terminator: {data[:80]!r}")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().replace("\n", " | ") or type(exc).__name__
    return text[:300]
