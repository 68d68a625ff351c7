#!/usr/bin/env python3
"""System calls per connection, per keep-alive request and per MiB of bulk, counted by
``strace -c -f`` on the one process that serves (Tunnel's worker, HAProxy, or nginx without master).

    python bench/syscalls.py [--target tunnel|haproxy|nginx] [-n 300] [--bulk-mib 64]
                             [--tests conn,resume,hs,req,bulk,bulk4,cpu]

* ``conn``: N connections, each a TLS 1.3 handshake, one 100-byte echo and a close;
* ``resume``: N resumed TLS 1.3 connections as ``openssl s_time -reuse -www`` makes them
  (the benchmark's "resumed reconnects"): a GET, the backend's reply and close, then the
  client's close without a close_notify;
* ``req``: N 100-byte echoes on one connection;
* ``bulk``: one download of ``--bulk-mib`` MiB (the backend sends it, then closes);
* ``cpu``: the same download three times without strace, the worker's CPU time per MiB
  (from /proc: user + system), which is what the benchmark's "per CPU-second" divides by.

Counts are exact for what they measure (no sampling) but the number of wake-ups depends
on timing: on a busy machine the same code gives ±1 call per connection. Tunnel runs from
the ``src/`` of this checkout (``TUNNEL_DATAPLANE`` is passed on). Loopback only; every
process started here is stopped by its PID.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
BACKEND = """
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(512)
mib = b"x" * (1 << 20)
def serve(c):
    while True:
        d = c.recv(65536)
        if not d:
            break
        if d == b"BULK":  # send the download, then close
            for _ in range(int(sys.argv[2])):
                c.sendall(mib)
            break
        if d.startswith(b"GET "):  # as the benchmark's HTTP/1.0 backend: reply, then close
            c.sendall(b"HTTP/1.0 200 OK\\r\\nContent-Length: 100\\r\\n\\r\\n" + b"x" * 100)
            break
        c.sendall(d)
    c.close()
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
"""
ROW = re.compile(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_target(target: str, tmp: str, port: int, backend: int) -> subprocess.Popen[bytes]:
    pem = f"{tmp}/both.pem"
    if target == "haproxy":
        cfg = Path(tmp, "haproxy.cfg")
        cfg.write_text(
            "global\n  nbthread 1\ndefaults\n  mode tcp\n  timeout connect 5s\n"
            "  timeout client 60s\n  timeout server 60s\n"
            f"frontend f\n  bind 127.0.0.1:{port} ssl crt {pem} ssl-min-ver TLSv1.2\n"
            f"  default_backend b\nbackend b\n  server s 127.0.0.1:{backend}\n"
        )
        return subprocess.Popen(["haproxy", "-db", "-f", str(cfg)])
    if target == "nginx":  # one process (no master): the one that serves is the one traced
        mod = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
        cfg = Path(tmp, "nginx.conf")
        cfg.write_text(
            (f"load_module {mod};\n" if mod.exists() else "")
            + ("user root;\n" if os.geteuid() == 0 else "")
            + f"worker_processes 1;\nmaster_process off;\ndaemon off;\npid {tmp}/nginx.pid;\n"
            f"error_log {tmp}/error.log crit;\nevents {{ worker_connections 1024; }}\n"
            f"stream {{ server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {pem};\n"
            f"  ssl_certificate_key {pem}; ssl_protocols TLSv1.2 TLSv1.3;\n"
            f"  proxy_pass 127.0.0.1:{backend}; }} }}\n"
        )
        return subprocess.Popen(["nginx", "-e", "stderr", "-p", tmp, "-c", str(cfg)])
    conf = Path(tmp, "tunnel.ini")
    conf.write_text(
        "[tunnel]\nworkers = 1\nlog_level = warning\nallow_root = yes\n"
        f"[t]\naccept = 127.0.0.1:{port}\ncert = {pem}\nconnect = 127.0.0.1:{backend}\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.Popen([sys.executable, "-m", "tunnel", "run", "-c", str(conf)], env=env)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", default="tunnel", choices=("tunnel", "haproxy", "nginx"))
    ap.add_argument("-n", type=int, default=300)
    ap.add_argument("--bulk-mib", type=int, default=64)
    ap.add_argument("--tests", default="conn,req,bulk")
    args = ap.parse_args()
    n, mib = args.n, args.bulk_mib
    tmp = tempfile.mkdtemp(prefix="syscalls_")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", f"{tmp}/k.pem", "-out", f"{tmp}/c.pem", "-days", "2",
         "-subj", "/CN=localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    Path(tmp, "both.pem").write_text(
        Path(tmp, "c.pem").read_text() + Path(tmp, "k.pem").read_text()
    )
    port, bport = free_port(), free_port()
    backend = subprocess.Popen([sys.executable, "-c", BACKEND, str(bport), str(mib)])
    server = start_target(args.target, tmp, port, bport)
    try:
        run(args.tests.split(","), server, port, n, mib, tmp)
    finally:
        for proc in (server, backend):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run(tests: list[str], server: subprocess.Popen[bytes], port: int, n: int, mib: int,
        tmp: str) -> None:  # fmt: skip
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    time.sleep(1.0)  # the worker's start-up is not what is measured
    kids = subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True, text=True)
    worker = (kids.stdout.split() or [str(server.pid)])[-1]

    def connect() -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", port))
        return ctx.wrap_socket(raw, server_hostname="localhost")

    def echo(s: ssl.SSLSocket) -> None:
        s.sendall(b"a" * 100)
        got = b""
        while len(got) < 100:
            got += s.recv(100)

    def conns() -> None:
        for _ in range(n):
            with connect() as s:
                echo(s)

    def bare() -> None:  # as ``openssl s_time -new``: a handshake, then a close
        for _ in range(n):
            connect().close()

    session: list[ssl.SSLSession] = []

    def resumed() -> None:  # as ``openssl s_time -reuse -www``: no close_notify either
        for _ in range(n):
            raw = socket.create_connection(("127.0.0.1", port))
            s = ctx.wrap_socket(raw, server_hostname="localhost", session=session[-1])
            s.sendall(b"GET /small HTTP/1.0\r\n\r\n")
            while s.recv(4096):
                pass
            if not s.session_reused:
                raise SystemExit("a reconnect was not resumed")
            session.append(s.session)
            s.close()
            del session[:-1]

    def reqs() -> None:
        with connect() as s:
            for _ in range(n):
                echo(s)

    def bulk() -> None:
        with connect() as s:
            s.sendall(b"BULK")
            total = 0
            while d := s.recv(1 << 20):
                total += len(d)
        assert total == mib << 20, total

    def bulk4() -> None:  # four streams at once, as bench/run.py's bulk4 row
        threads = [threading.Thread(target=bulk) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def cpu() -> float:
        fields = Path(f"/proc/{worker}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def traced(label: str, fn: Callable[[], None], ops: int) -> None:
        out = f"{tmp}/{label}.strace"
        st = subprocess.Popen(["strace", "-c", "-f", "-o", out, "-p", worker],
                              stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(0.7)  # strace attached
        fn()
        time.sleep(0.5)  # the closes are done
        st.send_signal(signal.SIGINT)
        st.wait()
        rows = []
        for line in Path(out).read_text().splitlines():
            m = ROW.match(line)
            if m and m.group(2) != "total":
                rows.append((m.group(2), int(m.group(1))))
        print(f"{label}: {sum(c for _, c in rows) / ops:.1f} system calls per op ({ops} ops)")
        for name, count in sorted(rows, key=lambda r: -r[1]):
            if count / ops >= 0.05:
                print(f"   {name:16s} {count / ops:8.2f}")

    for _ in range(5):  # warm-up
        with connect() as s:
            echo(s)
    if "conn" in tests:
        traced("per connection", conns, n)
    if "resume" in tests:
        with connect() as s:  # a first session (its ticket comes with the reply)
            s.sendall(b"GET /small HTTP/1.0\r\n\r\n")
            while s.recv(4096):
                pass
            session.append(s.session)
        traced("per resumed connection", resumed, n)
    if "hs" in tests:
        traced("per bare handshake", bare, n)
    if "req" in tests:
        traced("per keep-alive request", reqs, n)
    if "bulk" in tests:
        traced("per MiB of bulk", bulk, mib)
    if "bulk4" in tests:
        traced("per MiB of bulk, 4 streams", bulk4, 4 * mib)
    if "cpu" in tests:
        for _ in range(3):
            before = cpu()
            bulk()
            print(f"bulk: worker CPU {(cpu() - before) * 1000 / mib:.2f} ms per MiB ({mib} MiB)")


if __name__ == "__main__":
    main()
