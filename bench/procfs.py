"""What the harness reads from /proc: CPU time and memory of the gateway's processes, per-core
busy time, the processes behind a listening port, and a sampler thread. Linux only, stdlib only."""

from __future__ import annotations

import os
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    return s[s.rfind(")") + 2 :].split()  # fields from 3 (state) on; the comm may hold spaces


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), in seconds; 0 if it is gone."""
    try:
        fields = _stat_fields(pid)
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, ValueError, IndexError):
        return 0.0


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB: resident now, and the kernel's own peak."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def children(pid: int) -> list[int]:
    """Direct children of a process, from every /proc/<pid>/stat's parent field."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(_stat_fields(int(entry))[1]) == pid:
                    found.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return sorted(found)


def listening_pids(port: int) -> list[int]:
    """Processes holding a socket that listens on this TCP port (e.g. gunicorn master and workers)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(f"socket:[{parts[9]}]")
        except OSError:
            continue
    holders = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{entry}/fd/{fd}") in inodes:
                    holders.append(int(entry))
                    break
            except OSError:
                continue
    return sorted(holders)


def core_jiffies() -> dict[str, tuple[int, int]]:
    """Per core: (busy, total) jiffies since boot, from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                parts = line.split()
                vals = [int(x) for x in parts[1:9]]
                out[parts[0]] = (sum(vals) - vals[3] - vals[4], sum(vals))
    return out


def busy_pct(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> dict[str, float]:
    out = {}
    for core, (busy, total) in after.items():
        if core in before and total > before[core][1]:
            out[core] = round(100 * (busy - before[core][0]) / (total - before[core][1]), 1)
    return out


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


class Sampler(threading.Thread):
    """Samples the RSS of some processes every `interval` seconds; keeps the peak sum and each
    process's peak, and the peak of open file descriptors."""

    def __init__(self, pids: list[int], interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.interval = interval
        self.halt = threading.Event()
        self.peak_rss_kib = 0
        self.peak_fds = 0
        self.samples = 0
        self.last_rss_kib = 0

    def sample(self) -> None:
        rss = sum(memory_kib(p)[0] for p in self.pids)
        self.last_rss_kib = rss
        self.peak_rss_kib = max(self.peak_rss_kib, rss)
        self.peak_fds = max(self.peak_fds, sum(fd_count(p) for p in self.pids))
        self.samples += 1

    def run(self) -> None:
        while not self.halt.is_set():
            started = time.monotonic()
            self.sample()
            self.halt.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=5)
        self.sample()
