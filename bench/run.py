#!/usr/bin/env python3
"""Side-by-side benchmark of Tunnel against hitch, HAProxy, nginx (stream) and stunnel.

    python bench/run.py [--quick] [--workers 1|2] [--targets direct,haproxy] [--out DIR]

See bench/README.md for what each row means.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import Any

from tlsbench import environment, loads, report
from tlsbench.backend import start_backend
from tlsbench.certs import make_certs
from tlsbench.procs import Registry, raise_nofile_limit
from tlsbench.runner import Bench, Collected, TargetState
from tlsbench.suite import Durations, Metric, Sample, Test, build_tests
from tlsbench.targets import TARGETS

BENCH_DIR = Path(__file__).resolve().parent
ALL_TESTS = ("keepalive", "hs_ecdsa", "hs_rsa", "resume", "bulk1", "bulk4", "idle")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run: 1 round, < 2 min")
    parser.add_argument("--workers", type=int, choices=(1, 2), default=1)
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    parser.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help=f"comma-separated subset of {','.join(TARGETS)}",
    )
    parser.add_argument(
        "--tests",
        default=",".join(ALL_TESTS),
        help=f"comma-separated subset of {','.join(ALL_TESTS)}",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=1,
        help="re-measure a sample this often when unrelated work used > 0.5 cores (default 1)",
    )
    parser.add_argument("--no-speed", action="store_true", help="skip `openssl speed`")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results")
    parser.add_argument(
        "--from-json",
        type=Path,
        metavar="FILE",
        help="measure nothing: write the report again from an earlier results.json",
    )
    args = parser.parse_args(argv)
    for option, allowed in (("targets", TARGETS), ("tests", ALL_TESTS)):
        chosen = [x.strip() for x in getattr(args, option).split(",") if x.strip()]
        unknown = [x for x in chosen if x not in allowed]
        if unknown or not chosen:
            parser.error(f"--{option}: unknown or empty: {unknown}")
        setattr(args, option, chosen)
    return args


def durations_for(quick: bool, fd_limit: int) -> Durations:
    if quick:
        return Durations(keepalive=2, handshake=1, resume=1, bulk=1, idle_counts=(2000,))
    # The terminator needs two descriptors per connection (client + backend side).
    large = min(10_000, (fd_limit - 200) // 2 // 100 * 100)
    return Durations(keepalive=4, handshake=3, resume=3, bulk=3, idle_counts=(2000, large))


def install_tools(target_names: list[str]) -> list[str]:
    """Install what is missing; return targets that cannot run."""
    binaries = ["nginx", "wrk", "openssl"] + [
        b for name in target_names if (b := TARGETS[name].binary) and b not in ("nginx",)
    ]
    missing = environment.ensure_tools(binaries, want_stream="nginx" in target_names)
    essential = [b for b in missing if b in environment.ESSENTIAL]
    if essential:
        sys.exit(f"cannot run without: {', '.join(essential)}")
    unavailable = []
    for name in target_names:
        binary = TARGETS[name].binary
        if binary in missing or (name == "nginx" and "nginx-stream-module" in missing):
            unavailable.append(name)
    return unavailable


def run_speed() -> dict[str, tuple[str, str, float]]:
    speed = {}
    for name, (_kind, title, unit) in loads.SPEED_ROWS.items():
        try:
            speed[name] = (title, unit, loads.openssl_speed(name))
        except Exception as exc:
            print(f"openssl speed {name}: {exc}", flush=True)
    return speed


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def warn_if_busy() -> float:
    load = environment.load_average()
    if load > 0.5:
        print(
            f"warning: load average is {load:.2f} before starting; other work on "
            "this machine will skew the results",
            flush=True,
        )
    return load


def run_benchmark(args: argparse.Namespace, registry: Registry, tmp: Path) -> None:
    """Everything between installing tools and cleaning up."""
    unavailable = install_tools(args.targets)
    durations = durations_for(args.quick, raise_nofile_limit())
    rounds = args.rounds or (1 if args.quick else 3)
    started, load_before = time.monotonic(), warn_if_busy()
    print(f"temp dir {tmp}; generating certificates", flush=True)
    certs = make_certs(tmp)
    backend = start_backend(registry, tmp / "backend", args.workers)
    print(f"backend nginx on 127.0.0.1:{backend.port} (pid {backend.managed.pid})", flush=True)
    bench = Bench(
        registry,
        tmp,
        backend,
        certs,
        durations,
        args.workers,
        rounds,
        [TARGETS[name] for name in args.targets],
        retries=max(0, args.retries),
        retry_budget_s=20.0 if args.quick else 60.0,
    )
    for name in unavailable:
        state = bench.collected.states[name]
        state.status, state.error = "unavailable", "not installed"
    bench.preflight()
    tests = [t for t in build_tests(durations) if t.key in args.tests]
    for test in tests:
        bench.log(f"--- {test.title}")
        bench.run_test(test)
    speed = {} if args.no_speed else run_speed()
    meta = {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "rounds": rounds,
        "workers": args.workers,
        "durations": asdict(durations),
        "machine": environment.machine_info(),
        "versions": environment.tool_versions(BENCH_DIR.parent),
        "elapsed_s": round(time.monotonic() - started, 1),
        "load_average_before": load_before,
        "load_average_after": environment.load_average(),
    }
    write_outputs(args.out, meta, tests, bench, speed)


def rewrite_report(source: Path, out: Path) -> None:
    """Rebuild results.md / results.json / ratios.png from an earlier results.json."""
    doc = json.loads(source.read_text())
    collected = Collected()
    metrics = []
    for entry in doc["metrics"]:
        fields = {f.name for f in dataclasses.fields(Metric)}
        metric = Metric(**{k: v for k, v in entry.items() if k in fields})
        metrics.append(metric)
        for target, samples in entry["samples"].items():
            collected.samples.setdefault(metric.key, {})[target] = [
                Sample(**sample) for sample in samples
            ]
    for name, state in doc["targets"].items():
        collected.states[name] = TargetState(**state)
    speed = {
        name: (item["title"], item["unit"], item["value"])
        for name, item in doc.pop("openssl_speed_one_core").items()
    }
    meta = {k: v for k, v in doc.items() if k not in ("metrics", "targets")}
    out.mkdir(parents=True, exist_ok=True)
    rows = report.build_rows(metrics, collected)
    report.write_json(out / "results.json", meta, rows, collected, speed)
    report.write_markdown(out / "results.md", meta, rows, collected, speed)
    report.write_chart(out / "ratios.png", rows, list(collected.states))
    print(f"wrote {out / 'results.md'} from {source}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json is not None:
        rewrite_report(args.from_json, args.out)
        return 0
    signal.signal(signal.SIGTERM, _raise_interrupt)
    registry = Registry()
    tmp = Path(tempfile.mkdtemp(prefix="tunnel-bench-"))
    try:
        run_benchmark(args, registry, tmp)
    except KeyboardInterrupt:
        print("interrupted; stopping everything", flush=True)
        return 130
    finally:
        registry.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def write_outputs(
    out: Path,
    meta: dict[str, Any],
    tests: list[Test],
    bench: Bench,
    speed: dict[str, tuple[str, str, float]],
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    metrics = [m for t in tests for m in t.metrics]
    rows = report.build_rows(metrics, bench.collected)
    report.write_json(out / "results.json", meta, rows, bench.collected, speed)
    report.write_markdown(out / "results.md", meta, rows, bench.collected, speed)
    charted = report.write_chart(out / "ratios.png", rows, list(bench.collected.states))
    print(f"wrote {out / 'results.md'}, results.json" + (", ratios.png" if charted else ""))
    print(f"total time {meta['elapsed_s']}s")


if __name__ == "__main__":
    sys.exit(main())
