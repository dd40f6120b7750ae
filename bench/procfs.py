"""Readings from /proc: CPU time, peak memory and open files of a process tree.

CPU comes from fields 14 and 15 of /proc/PID/stat (utime and stime, in clock
ticks), so it counts only the processes we name, whatever else the machine
is doing. A server "tree" is the process we started and all its descendants
(nginx's workers, a proxy's worker processes).
"""

from __future__ import annotations

import os

TICK = os.sysconf("SC_CLK_TCK")


def read_stat(pid: int) -> tuple[int, int] | None:
    """Return (parent pid, utime + stime in ticks), or None if pid is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            raw = stat.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after the last ")".
    fields = raw[raw.rindex(b")") + 2 :].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])


def tree(root: int) -> list[int]:
    """Return root and every live descendant of it."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = read_stat(int(name))
            if stat:
                children.setdefault(stat[0], []).append(int(name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def cpu_seconds(roots: list[int]) -> dict[int, float]:
    """Return CPU seconds used so far by each live process under the roots."""
    used: dict[int, float] = {}
    for root in roots:
        for pid in tree(root):
            stat = read_stat(pid)
            if stat:
                used[pid] = stat[1] / TICK
    return used


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """Return CPU seconds spent between two readings.

    A process that started in between counts from zero; one that ended in
    between is lost (its time went to a parent that did not wait for it).
    """
    return sum(after[pid] - before.get(pid, 0.0) for pid in after)


def status_kb(pid: int, key: str) -> int:
    """Return a `kB` field of /proc/PID/status (VmRSS, VmHWM), 0 if gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak(root: int) -> bool:
    """Reset VmHWM to the current RSS for the tree (needs to own it, or root)."""
    done = True
    for pid in tree(root):
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as refs:
                refs.write("5")
        except OSError:
            done = False
    return done


def peak_rss_mb(root: int) -> float:
    """Return the sum of VmHWM over the tree, in MB."""
    return sum(status_kb(pid, "VmHWM") for pid in tree(root)) / 1024


def rss_mb(root: int) -> float:
    """Return the sum of VmRSS over the tree, in MB."""
    return sum(status_kb(pid, "VmRSS") for pid in tree(root)) / 1024


def open_fds(root: int) -> int:
    """Return the number of open file descriptors over the tree."""
    count = 0
    for pid in tree(root):
        try:
            count += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    return count
