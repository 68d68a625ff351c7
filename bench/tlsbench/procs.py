"""Starting, watching and stopping the processes the benchmark owns.

Every process is started with Popen and stopped by the PID we got back (plus any
descendants we saw it spawn); nothing is ever killed by name.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def raise_nofile_limit() -> int:
    """Raise RLIMIT_NOFILE to the hard limit (inherited by children); return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def fd_budget() -> int:
    """File descriptors a server may use (soft RLIMIT_NOFILE minus some slack)."""
    return max(1024, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 100)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_accepts(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------- /proc sampling


def _read_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (index 0 is the state)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _read_stat(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def process_tree(root: int) -> list[int]:
    """The PID ``root`` and all its live descendants."""
    children = _children_map()
    tree, todo = [], [root]
    while todo and len(tree) < 10_000:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def tree_cpu_seconds(root: int) -> float:
    """utime+stime (and reaped children's) of the whole process tree, in seconds."""
    ticks = 0
    for pid in process_tree(root):
        fields = _read_stat(pid)
        if fields is not None:
            ticks += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return ticks / CLK_TCK


def tree_rss_kib(root: int) -> int:
    """Sum of VmRSS over the process tree, in KiB."""
    total = 0
    for pid in process_tree(root):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


# ---------------------------------------------------------------- managed processes


@dataclass
class Managed:
    """One long-running process we started (a terminator or the backend)."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    seen_pids: set[int] = field(default_factory=set)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def remember_tree(self) -> None:
        if self.alive():
            self.seen_pids.update(process_tree(self.pid))

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])


class Registry:
    """Tracks everything started so that ``stop_all`` (in a finally) cleans it up."""

    def __init__(self) -> None:
        self._procs: list[Managed] = []

    def start(self, name: str, argv: Sequence[str], log_path: Path, **kw: object) -> Managed:
        log = log_path.open("wb")
        try:
            proc = subprocess.Popen(  # type: ignore[call-overload]
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **kw,
            )
        finally:
            log.close()
        managed = Managed(name, proc, log_path)
        self._procs.append(managed)
        return managed

    def stop(self, managed: Managed, grace: float = 5.0) -> None:
        managed.remember_tree()
        if managed.alive():
            with contextlib.suppress(ProcessLookupError):
                managed.proc.send_signal(signal.SIGTERM)
            try:
                managed.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                managed.proc.kill()
                managed.proc.wait(timeout=grace)
        _kill_leftovers(managed.seen_pids - {managed.pid}, grace)
        if managed in self._procs:
            self._procs.remove(managed)

    def stop_all(self) -> None:
        for managed in reversed(list(self._procs)):
            with contextlib.suppress(Exception):
                self.stop(managed)


def _pid_alive(pid: int) -> bool:
    fields = _read_stat(pid)
    return fields is not None and fields[0] != "Z"


def _kill_leftovers(pids: set[int], grace: float) -> None:
    """SIGTERM then SIGKILL descendants (by PID) that outlived their parent."""
    live = {pid for pid in pids if _pid_alive(pid)}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while live and time.monotonic() < deadline:
            time.sleep(0.05)
            live = {pid for pid in live if _pid_alive(pid)}
        if not live:
            return


def wait_for_port(managed: Managed, port: int, timeout: float = 15.0) -> None:
    """Wait until ``port`` accepts connections; raise if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not managed.alive():
            raise RuntimeError(
                f"{managed.name} exited with {managed.proc.returncode}: {managed.log_tail()}"
            )
        if port_accepts(port):
            managed.remember_tree()
            return
        time.sleep(0.05)
    raise RuntimeError(f"{managed.name} did not accept on port {port} within {timeout:.0f}s")


# ---------------------------------------------------------------- other load on the machine


def _busy_seconds() -> float:
    """CPU-seconds spent busy on all CPUs since boot (everything but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(fields) - fields[3] - fields[4]) / CLK_TCK


def _own_seconds() -> float:
    """CPU-seconds of this process and its reaped children (the finished load tools)."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


@dataclass
class LoadMeter:
    """Estimates CPU used by *other* work during a measurement, in cores.

    Busy time of the whole machine minus what the benchmark's own processes used
    (the terminator and backend trees, this process and its finished load tools).
    Interrupt time the kernel charges to no process shows up here too, so a small
    positive value is normal.
    """

    roots: list[int]
    _start: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def _ours(self) -> float:
        return _own_seconds() + sum(tree_cpu_seconds(pid) for pid in self.roots)

    def start(self) -> None:
        self._start = (time.monotonic(), _busy_seconds(), self._ours())

    def other_cores(self) -> float:
        t0, busy0, ours0 = self._start
        wall = max(1e-3, time.monotonic() - t0)
        other = (_busy_seconds() - busy0) - (self._ours() - ours0)
        return max(0.0, other / wall)
