#!/usr/bin/env python3
"""Where each terminator's CPU goes, per unit of work: the "what bounds it" evidence.

    python bench/profile.py [--tests resume,hs_ecdsa,keepalive,bulk4]
                            [--targets tunnel,haproxy] [--seconds 4] [--callgrind N]
                            [--out FILE]

For every (test, target) it starts the backend and a fresh terminator (1 worker, the same
settings as ``bench/run.py``), runs the load while ``perf record -e cpu-clock`` samples the
terminator's processes, and splits the terminator's CPU time per operation (µs per
connection or request, per MB for bulk) into: kernel, OpenSSL (libcrypto + libssl),
libc, the runtime (libpython and uvloop for Tunnel; the program's own code for the
others) and the rest. ``--callgrind N`` also counts user-space instructions per
operation for N resumed connections / keep-alive requests (valgrind; exact and repeatable,
unlike times; Tunnel and HAProxy only).

The point: if a peer's kernel + OpenSSL share alone is most of its total, no terminator
that pays the same kernel and OpenSSL cost can be much cheaper per operation, whatever
its own code does. Writes a markdown report (default ``bench/results/profile.md``).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tlsbench import environment, loads
from tlsbench.backend import start_backend
from tlsbench.certs import make_certs
from tlsbench.procs import (
    Registry,
    process_tree,
    raise_nofile_limit,
    tree_cpu_seconds,
    wait_for_port,
)
from tlsbench.profiling import CATEGORIES, World, callgrind_per_op, categorize, parse_perf_dsos
from tlsbench.targets import TARGETS

BENCH_DIR = Path(__file__).resolve().parent
TESTS = {
    # name: (certificate, unit, load)
    "resume": ("ecdsa", "µs/conn", "s_time -reuse -www /small, 4 clients"),
    "hs_ecdsa": ("ecdsa", "µs/hs", "s_time -new, 4 clients"),
    "hs_rsa": ("rsa", "µs/hs", "s_time -new, 4 clients"),
    "keepalive": ("ecdsa", "µs/req", "wrk -c50 /small"),
    "bulk1": ("ecdsa", "µs/MB", "wrk -c1 /big"),
    "bulk4": ("ecdsa", "µs/MB", "wrk -c4 /big"),
}


def run_load(test: str, port: int, seconds: int, tmp: Path) -> float:
    """Run the test's load; return the number of operations (MB for bulk)."""
    if test in ("resume", "hs_ecdsa", "hs_rsa"):
        return loads.run_s_time(port, seconds, 4, reuse=test == "resume").connections
    script = loads.write_wrk_script(tmp)
    if test in ("bulk1", "bulk4"):
        streams = int(test[-1])
        return loads.run_wrk(f"https://127.0.0.1:{port}/big", streams, seconds, script).bytes / 1e6
    return loads.run_wrk(f"https://127.0.0.1:{port}/small", 50, seconds, script).requests


def profile_one(world: World, target: str, test: str, seconds: int) -> dict[str, float]:
    """µs of terminator CPU per operation, by category (plus "total")."""
    managed, port, workdir = world.start(target, TESTS[test][0], f"{target}-{test}-")
    try:
        wait_for_port(managed, port)
        time.sleep(0.3)
        data = workdir / "perf.data"
        pids = ",".join(str(pid) for pid in process_tree(managed.pid))
        perf = subprocess.Popen(
            ["perf", "record", "-e", "cpu-clock", "-F", "4000", "-o", str(data), "-p", pids],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(0.5)
            cpu_before = tree_cpu_seconds(managed.pid)
            ops = run_load(test, port, seconds, workdir)
            cpu = tree_cpu_seconds(managed.pid) - cpu_before
        finally:
            perf.send_signal(signal.SIGINT)
            perf.wait(timeout=60)
        report = subprocess.run(
            ["perf", "report", "-i", str(data), "--no-children", "--sort", "dso", "--stdio"],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
    finally:
        world.registry.stop(managed)
    shares = categorize(parse_perf_dsos(report), target)
    per_op = {name: share * cpu / ops * 1e6 for name, share in shares.items()}
    per_op["total"] = cpu / ops * 1e6
    return per_op


def table(results: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    lines = []
    for test, by_target in results.items():
        unit = TESTS[test][1]
        lines += [
            f"### {test} ({TESTS[test][2]}), {unit}",
            "",
            "| target | total | " + " | ".join(CATEGORIES) + " | kernel + OpenSSL |",
            "|---|---:|" + "---:|" * (len(CATEGORIES) + 1),
        ]
        for target, row in by_target.items():
            floor = row["kernel"] + row["OpenSSL"]
            cells = " | ".join(f"{row[c]:,.1f}" for c in CATEGORIES)
            lines.append(f"| {target} | {row['total']:,.1f} | {cells} | {floor:,.1f} |")
        lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", default="resume,hs_ecdsa,keepalive,bulk4")
    parser.add_argument("--targets", default="tunnel,haproxy,hitch,nginx")
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--callgrind", type=int, default=0, metavar="N")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "profile.md")
    args = parser.parse_args(argv)
    tests = [t for t in args.tests.split(",") if t]
    targets = [t for t in args.targets.split(",") if t]
    unknown = [t for t in tests if t not in TESTS] + [t for t in targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown tests or targets: {unknown}")
    binaries = ["nginx", "wrk", "openssl", "perf"] + [
        b for t in targets if (b := TARGETS[t].binary) and b != "nginx"
    ]
    environment.APT_PACKAGES.setdefault("perf", "linux-perf")
    environment.APT_PACKAGES.setdefault("valgrind", "valgrind")
    missing = environment.ensure_tools(binaries, want_stream="nginx" in targets)
    if "perf" in missing:
        sys.exit("perf is needed (Debian package linux-perf)")
    targets = [t for t in targets if TARGETS[t].binary not in missing]
    raise_nofile_limit()
    registry = Registry()
    tmp = Path(tempfile.mkdtemp(prefix="tunnel-profile-"))
    results: dict[str, dict[str, dict[str, float]]] = {}
    counts: list[str] = []
    try:
        certs = make_certs(tmp)
        backend = start_backend(registry, tmp / "backend", 1)
        world = World(registry, tmp, backend.port, certs)
        for test in tests:
            for target in targets:
                row = profile_one(world, target, test, args.seconds)
                results.setdefault(test, {})[target] = row
                print(f"{test:9s} {target:8s} {row['total']:9.1f} {TESTS[test][1]}", flush=True)
        if args.callgrind:
            environment.ensure_tools(["valgrind"], want_stream=False)
            for test in ("resume", "keepalive"):
                for target in ("tunnel", "haproxy"):
                    line = callgrind_per_op(world, target, test, args.callgrind)
                    print(line, flush=True)
                    counts.append(f"- {line}")
    finally:
        registry.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    lines = ["# Where the CPU goes (1 worker, perf cpu-clock samples)", "", *table(results)]
    if counts:
        lines += ["## User-space instructions per operation (callgrind)", "", *counts, ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
