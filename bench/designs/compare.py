"""Relay design comparison: Tunnel's Protocol relay vs a stream-based relay vs direct.

Settles the relay design by measurement (Core issue): with one worker each, it measures
keep-alive requests/s (`wrk -c50`) and the throughput of a 1 GiB download, through
Tunnel (Protocol + own MemoryBIO TLS layer, uvloop), through a straightforward
asyncio-streams relay on uvloop (bench/designs/stream_relay.py), and direct to the same
nginx backend, interleaved round by round. Every figure is also given per CPU-second of
the relay's own processes.

Usage: python bench/designs/compare.py [--rounds 3] [--seconds 8]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tlsbench.backend import start_backend  # noqa: E402
from tlsbench.certs import make_cert  # noqa: E402
from tlsbench.loads import run_wrk, write_wrk_script  # noqa: E402
from tlsbench.procs import Managed, Registry, free_port, tree_cpu_seconds, wait_for_port  # noqa: E402

HUGE = 1024**3
REPO = HERE.parent.parent


def _start_relay(
    reg: Registry, kind: str, work: Path, cert: Path, backend: int
) -> tuple[Managed, int]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    if kind == "tunnel":
        conf = work / "tunnel.ini"
        conf.write_text(
            f"[tunnel]\nworkers = 1\nlog_level = warning\nallow_root = yes\n[bench]\n"
            f"accept = 127.0.0.1:{port}\ncert = {cert}\nconnect = 127.0.0.1:{backend}\n"
        )
        argv = [sys.executable, "-m", "tunnel", "run", "-c", str(conf)]
    else:
        argv = [sys.executable, str(HERE / "stream_relay.py"), str(cert), str(port), str(backend)]
    managed = reg.start(kind, argv, work / f"{kind}.log", env=env)
    wait_for_port(managed, port)
    return managed, port


def _download(scheme: str, port: int) -> float:
    """MB/s of one 1 GiB GET, read with 1 MiB buffers (the same client for every target)."""
    raw = socket.create_connection(("127.0.0.1", port))
    conn: socket.socket = raw
    if scheme == "https":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = ctx.wrap_socket(raw)
    with conn:
        start = time.perf_counter()
        conn.sendall(b"GET /huge HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        buf = bytearray(1 << 20)
        total = 0
        while n := conn.recv_into(buf):
            total += n
        seconds = time.perf_counter() - start
    if total < HUGE:
        raise RuntimeError(f"short download: {total} bytes")
    return HUGE / seconds / 1e6


def _measure(
    reg: Registry, kind: str, work: Path, cert: Path, backend: int, secs: int
) -> dict[str, float]:
    script = write_wrk_script(work)
    if kind == "direct":
        managed, scheme, port = None, "http", backend
    else:
        managed, port = _start_relay(reg, kind, work, cert, backend)
        scheme = "https"
    try:
        cpu0 = tree_cpu_seconds(managed.pid) if managed else 0.0
        wrk = run_wrk(f"{scheme}://127.0.0.1:{port}/small", 50, secs, script)
        cpu1 = tree_cpu_seconds(managed.pid) if managed else 0.0
        mbps = _download(scheme, port)
        cpu2 = tree_cpu_seconds(managed.pid) if managed else 0.0
    finally:
        if managed:
            reg.stop(managed)
    rps = wrk.requests / wrk.seconds
    return {
        "rps": rps,
        "p99_ms": wrk.p99_ms,
        "rps_per_cpu": wrk.requests / (cpu1 - cpu0) if managed else float("nan"),
        "mbps": mbps,
        "mb_per_cpu": HUGE / 1e6 / (cpu2 - cpu1) if managed else float("nan"),
    }


def _stop_on_sigterm(signo: int, _frame: object) -> None:
    raise SystemExit(128 + signo)  # so the finally blocks stop what we started


def main() -> None:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=8)
    args = ap.parse_args()
    kinds = ["direct", "tunnel", "streams"]
    results: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    reg = Registry()
    with tempfile.TemporaryDirectory(prefix="tunnel-designs-") as tmp:
        work = Path(tmp)
        try:
            backend = start_backend(reg, work / "backend", 1)
            with (work / "backend" / "www" / "huge").open("wb") as f:
                f.truncate(HUGE)
            cert = make_cert(work, "ecdsa").combined
            for rnd in range(args.rounds):
                for kind in kinds[rnd % 3 :] + kinds[: rnd % 3]:
                    print(f"round {rnd + 1}/{args.rounds}: {kind} ...", flush=True)
                    results[kind].append(
                        _measure(reg, kind, work, cert, backend.port, args.seconds)
                    )
        finally:
            reg.stop_all()
    _report(results)


def _report(results: dict[str, list[dict[str, float]]]) -> None:
    def med(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in results[kind])

    lines = [
        "| relay (1 worker) | keep-alive req/s | p99 ms | req per CPU-s"
        " | 1 GiB MB/s | MB per CPU-s |",
        "|---|---|---|---|---|---|",
    ]
    for kind in results:
        lines.append(
            f"| {kind} | {med(kind, 'rps'):,.0f} | {med(kind, 'p99_ms'):.2f} | "
            f"{med(kind, 'rps_per_cpu'):,.0f} | {med(kind, 'mbps'):,.0f} | "
            f"{med(kind, 'mb_per_cpu'):,.0f} |"
        )
    lines.append("")
    lines.append(
        f"tunnel/direct: keep-alive {med('tunnel', 'rps') / med('direct', 'rps'):.2f}x, "
        f"bulk {med('tunnel', 'mbps') / med('direct', 'mbps'):.2f}x; "
        f"tunnel/streams: keep-alive {med('tunnel', 'rps') / med('streams', 'rps'):.2f}x, "
        f"bulk {med('tunnel', 'mbps') / med('streams', 'mbps'):.2f}x "
        f"(per CPU-s: {med('tunnel', 'rps_per_cpu') / med('streams', 'rps_per_cpu'):.2f}x, "
        f"{med('tunnel', 'mb_per_cpu') / med('streams', 'mb_per_cpu'):.2f}x)"
    )
    text = "\n".join(lines)
    print(text)
    out = HERE.parent / "results"
    out.mkdir(exist_ok=True)
    (out / "designs.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
