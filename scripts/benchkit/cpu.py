"""CPU seconds of process trees, read from /proc (utime + stime, in clock ticks).

A tree is a process we started and every descendant alive at the sample (gunicorn's workers, a
Celery pool, a Redis fork for its AOF rewrite), plus what its reaped children used (the
``cutime``/``cstime`` of the root). A kind may also be a function that returns its PIDs at
each sample: the shared PostgreSQL's backends serving this bench's connections, found by their
``application_name``.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

PidSource = int | Callable[[], Iterable[int]]


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def parents() -> dict[int, list[int]]:
    """{pid: [child pids]} of every process, from one pass over /proc."""
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields:
                kids.setdefault(int(fields[1]), []).append(int(entry))
    return kids


def tree(root: int, kids: dict[int, list[int]]) -> list[int]:
    """``root`` and all its descendants."""
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += kids.get(pid, [])
    return out


def seconds(pids: Iterable[int], *, reaped_of: int | None = None) -> float:
    """CPU seconds (user + system) of ``pids``, plus the reaped children of ``reaped_of``."""
    total = 0
    for pid in pids:
        f = _stat(pid)
        if f:
            total += int(f[11]) + int(f[12])  # utime, stime
            if pid == reaped_of:
                total += int(f[13]) + int(f[14])  # cutime, cstime
    return total / TICK


class Meter:
    """Named process trees; ``sample()`` gives CPU seconds per name."""

    def __init__(self) -> None:
        self.kinds: dict[str, tuple[PidSource, bool]] = {}
        # PIDs a function gave come and go (a backend per connection): remember the last
        # figure of each, so one that ended keeps counting and the sum never goes back
        self._seen: dict[str, dict[int, float]] = {}

    def add(self, name: str, source: PidSource | None, tree: bool = True) -> None:
        """Measure a PID with its descendants (``tree``), alone, or the PIDs a function gives."""
        if source:
            self.kinds[name] = (source, tree)

    def sample(self) -> dict[str, float]:
        kids = parents()
        out = {}
        for name, (source, whole) in self.kinds.items():
            if callable(source):
                seen = self._seen.setdefault(name, {})
                try:
                    for pid in source():
                        if _stat(pid):
                            seen[pid] = seconds([pid])
                except Exception:  # noqa: S110 -- the source's server is away: keep the last figures
                    pass
                out[name] = sum(seen.values())
            elif whole:
                out[name] = seconds(tree(source, kids), reaped_of=source)
            else:
                out[name] = seconds([source])
        return out


def delta(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """CPU seconds spent between two samples, per name."""
    return {k: b[k] - a.get(k, 0.0) for k in b}


def per_1k(spent: dict[str, float], events: float) -> dict[str, float]:
    """CPU seconds per 1,000 events, per name (NaN when no events)."""
    return {k: (v / events * 1000 if events else float("nan")) for k, v in spent.items()}


OTHERS = "(other processes on the machine)"


def machine_seconds() -> float:
    """CPU seconds every process of the machine used so far (busy time of all cores, /proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal: everything but idle and iowait
    return (v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)) / TICK


def others(machine_s: float, ours: dict[str, float]) -> float:
    """CPU seconds of the machine not spent by any kind measured (other jobs on a shared host)."""
    return max(0.0, machine_s - sum(v for v in ours.values() if v == v))
