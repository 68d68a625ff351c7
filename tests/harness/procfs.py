"""/proc figures of a process tree: children, liveness, fds, sockets, RSS, TCP states."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc/PID/task/PID/children), or [] if it is gone."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def rss_kib(pid: int) -> int:
    """The resident set size of process ``pid`` in KiB (VmRSS)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def fd_targets(pid: int) -> list[str]:
    """What each fd of process ``pid`` points to (``socket:[INODE]``, ``pipe:[...]``, a
    path...); an fd closed while it is read is left out."""
    targets = []
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        with contextlib.suppress(FileNotFoundError):
            targets.append(os.readlink(f"{fd_dir}/{fd}"))
    return targets


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process ``pid`` holds."""
    return {int(t[8:-1]) for t in fd_targets(pid) if t.startswith("socket:[")}


@dataclass(frozen=True)
class Figures:
    """fds, sockets and RSS (KiB) summed over some processes."""

    fds: int
    sockets: int
    rss_kib: int

    def __str__(self) -> str:
        return f"fds={self.fds} sockets={self.sockets} rss={self.rss_kib} KiB"


TCP_STATE_NAMES = {
    "01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
    "05": "FIN_WAIT2", "06": "TIME_WAIT", "08": "CLOSE_WAIT", "09": "LAST_ACK",
    "0A": "LISTEN", "0B": "CLOSING",
}  # fmt: skip


def socket_table() -> dict[int, str]:
    """Every socket inode of the host's tables, named by kind: ``tcp:LISTEN``,
    ``tcp:ESTABLISHED``..., ``udp`` or ``unix``. A TCP socket that is closed (reset, or
    never connected) is in no table: an fd on it is a connection not yet let go."""
    kinds: dict[int, str] = {}
    for table, column in (("tcp", 9), ("tcp6", 9), ("udp", 9), ("udp6", 9), ("unix", 6)):
        with open(f"/proc/net/{table}", encoding="ascii") as f:
            next(f)
            for line in f:
                fields = line.split()
                if len(fields) <= column:
                    continue
                if table.startswith("tcp"):
                    kinds[int(fields[column])] = "tcp:" + TCP_STATE_NAMES.get(fields[3], fields[3])
                else:
                    kinds[int(fields[column])] = table.rstrip("6")
    return kinds


def fd_kinds(pids: list[int]) -> dict[int, dict[str, int]]:
    """What each process's fds are, counted: ``socket(tcp:LISTEN)``, ``socket(unix)``,
    ``socket(closed)``, ``pipe``, ``anon_inode:[eventpoll]``, a path...: the detail behind
    :func:`figures` when a count moved."""
    sockets = socket_table()
    table: dict[int, dict[str, int]] = {}
    for pid in pids:
        kinds: dict[str, int] = {}
        for target in fd_targets(pid):
            if target.startswith("socket:["):
                kind = f"socket({sockets.get(int(target[8:-1]), 'closed')})"
            elif target.startswith("pipe:["):
                kind = "pipe"
            else:
                kind = target
            kinds[kind] = kinds.get(kind, 0) + 1
        table[pid] = dict(sorted(kinds.items()))
    return table


def connections_held(pids: list[int]) -> int:
    """How many sockets of the processes ``pids`` belong to a connection, open or closing
    (any TCP socket that is not listening); 0 once they hold only listeners and Unix/UDP
    sockets."""
    at_rest = {"socket(tcp:LISTEN)", "socket(unix)", "socket(udp)"}
    return sum(
        count
        for kinds in fd_kinds(pids).values()
        for kind, count in kinds.items()
        if kind.startswith("socket(") and kind not in at_rest
    )


def figures(pids: list[int]) -> Figures:
    """Measure the processes ``pids`` now."""
    fds = sockets = rss = 0
    for pid in pids:
        fds += len(os.listdir(f"/proc/{pid}/fd"))
        sockets += len(socket_inodes(pid))
        rss += rss_kib(pid)
    return Figures(fds, sockets, rss)


TCP_STATES = {"08": "CLOSE_WAIT", "01": "ESTABLISHED"}


def tcp_states(pids: list[int]) -> dict[str, int]:
    """TCP states of the sockets the processes ``pids`` hold (from /proc/net/tcp{,6})."""
    inodes: set[int] = set()
    for pid in pids:
        inodes |= socket_inodes(pid)
    counts: dict[str, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table, encoding="ascii") as f:
            next(f)
            for line in f:
                fields = line.split()
                if int(fields[9]) in inodes:
                    state = TCP_STATES.get(fields[3], fields[3])
                    counts[state] = counts.get(state, 0) + 1
    return counts
