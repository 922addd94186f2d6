"""Where a part saturates: CPU use against what each process kind can use (pure logic).

On a machine of N cores a process kind can use at most min(its processes, N) cores: a web tier
of 2 gunicorn processes (threads share a GIL), a Celery worker of concurrency c, Redis one core
(single-threaded), ClickHouse all of them. A kind at >= 85 % of that is saturated; the machine
is when everything together uses >= 90 % of N cores; storage is behind when, as the load stopped,
what was accepted but not yet stored amounted to more than 2.5 s of the accepted rate (a flush
interval and an INSERT account for about 1.5 s: more means the broker's queue was growing).
"""
from __future__ import annotations

from benchkit.cpu import OTHERS
from benchkit.stats import isnum

PART_FULL = 0.85
MACHINE_FULL = 0.90
BACKLOG_S = 2.5


def saturation(cpu_pct: dict[str, float], capacity: dict[str, int], cores: int, backlog_s: float) -> list[str]:
    """What limited one measurement, most important first ([] when nothing was near a limit).

    ``backlog_s``: accepted-but-unstored events when the load stopped, in seconds of ingest.
    """
    flags = []
    if isnum(backlog_s) and backlog_s > BACKLOG_S:
        flags.append(f"storage behind ingest ({backlog_s:.1f} s of ingest not stored at the end)")
    total = sum(v for v in cpu_pct.values() if isnum(v))
    if total >= MACHINE_FULL * cores * 100:
        other = cpu_pct.get(OTHERS, 0.0)
        flags.append(f"machine CPU ({total:.0f} of {cores * 100} %"
                     + (f", {other:.0f} of it other jobs)" if isnum(other) and other >= 5 else ")"))
    for name, used in sorted(cpu_pct.items(), key=lambda kv: -(kv[1] if isnum(kv[1]) else 0)):
        if name == OTHERS:
            continue
        cap = min(capacity.get(name, cores), cores) * 100
        if isnum(used) and used >= PART_FULL * cap:
            flags.append(f"{name} ({used:.0f} of {cap} %)")
    return flags


def top(cpu_pct: dict[str, float], n: int = 3,
        skip: tuple = ("load generator", "bench (sink, pollers)", OTHERS)) -> str:
    """The ``n`` busiest kinds, 'web 120, clickhouse 40, events 30' (% of one core)."""
    busy = sorted(((k, v) for k, v in cpu_pct.items() if isnum(v) and k not in skip), key=lambda kv: -kv[1])
    return ", ".join(f"{k} {v:.0f}" for k, v in busy[:n])
