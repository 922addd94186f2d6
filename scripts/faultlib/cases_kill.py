"""Cases 0-4: processes killed, frozen or stopped under load."""
from __future__ import annotations

import os
import random
import signal
import time

from faultlib.brokers import wait_drained


def broker_kill_restart(ctx) -> float:
    """0. broker kill -9 and restart from its data (Redis: its AOF; RabbitMQ: its queues on disk)
    while the events worker holds buffered work."""
    ctx.warmup()
    broker = ctx.rig.broker
    held = broker.held()
    lag = " (RabbitMQ's queue stats, up to 5 s old)" if broker.kind == "amqp" else ""
    ctx.result.notes.append(f"messages unacked (held by workers) at the kill: {held}{lag}")
    ctx.extra["held_at_kill"] = held
    broker.proc.kill9()
    time.sleep(2)
    broker.proc.restart()
    return time.monotonic()


def broker_graceful_restart(ctx) -> float:
    """14. the broker stopped gracefully (SIGTERM) and started again under load."""
    ctx.warmup()
    broker = ctx.rig.broker
    ctx.extra["held_at_kill"] = broker.held()
    t0 = time.monotonic()
    broker.proc.stop()
    stopped = time.monotonic() - t0
    broker.proc.restart()
    t = time.monotonic()
    ctx.result.notes.append(f"{broker.what} graceful stop took {stopped:.1f}s, the start "
                            f"{broker.proc.startup_seconds:.1f}s; {ctx.extra['held_at_kill']} messages "
                            "were unacked before the stop")
    ctx.result.check("graceful stop within 60 s", stopped <= 60, f"{stopped:.1f}s")
    return t


def broker_drained(ctx) -> None:
    """After cases 0 and 14: nothing left waiting in events, nothing unacked."""
    # Redis: messages whose ack died with the old connection come back after the visibility
    # timeout (60 s) plus kombu's restore scan (6 s): wait that long, not less. RabbitMQ gives
    # them back when the connection closes.
    ok, depths = wait_drained(ctx.rig.broker, 90)
    ctx.result.check("broker drained (events empty, nothing unacked)", ok, str(depths))


def pool_children(ctx) -> float:
    """1. kill -9 of pool children every few seconds, including during flushes."""
    ctx.warmup()
    kills, end = 0, time.monotonic() + ctx.scale.fault_seconds
    while time.monotonic() < end:
        for w in ctx.rig.workers():
            kids = w.children()
            victims = kids if w.name == "events" else random.sample(kids, min(1, len(kids)))
            for pid in victims:
                try:
                    os.kill(pid, signal.SIGKILL)
                    kills += 1
                except ProcessLookupError:
                    pass
        time.sleep(2)
    ctx.result.notes.append(f"pool children killed: {kills}")
    ctx.result.check("pool children were killed", kills > 0, f"{kills} (a threads pool has none)")
    return time.monotonic()


def worker_mains(ctx) -> float:
    """2. kill -9 of each worker's main process, then a restart."""
    ctx.warmup()
    workers = ctx.rig.workers()
    for w in workers:
        w.kill9()  # the main process only; its pool children are orphaned
    time.sleep(1)
    orphans = sum(len([p for p in _group(w)]) for w in workers)
    ctx.result.notes.append(f"pool processes left after the main kill -9 (reaped before restart): {orphans}")
    t = time.monotonic()
    ctx.restart_all(workers)
    return t


def _group(proc) -> list[int]:
    """PIDs still in the process group the Proc started (pool processes of a killed main)."""
    out = []
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                if os.getpgid(int(e)) == proc.pid:
                    out.append(int(e))
            except (ProcessLookupError, PermissionError):
                pass
    return out


def beat_kill_two(ctx) -> float:
    """3. kill -9 of beat and a restart; then two beats at once."""
    ctx.warmup()
    beat = ctx.rig.stack.procs["beat"]
    beat.kill9()
    time.sleep(3)
    beat.restart()
    second = ctx.rig.stack.add_beat("beat2").start()
    time.sleep(max(10.0, ctx.scale.fault_seconds))
    second.stop()
    del ctx.rig.stack.procs["beat2"]
    return time.monotonic()


def sigterm_web_workers(ctx) -> float:
    """4. SIGTERM of web and workers under load, then a restart."""
    ctx.warmup()
    procs = [ctx.rig.stack.procs["web"]] + ctx.rig.workers()
    t0 = time.monotonic()
    for p in procs:
        p.signal(signal.SIGTERM)
    slow = []
    for p in procs:
        try:
            p.proc.wait(60)
        except Exception:
            slow.append(p.name)
    ctx.result.check("warm shutdown of web and workers within 60 s", not slow,
                     f"took {time.monotonic() - t0:.1f}s" + (f"; still running: {slow}" if slow else ""))
    t = time.monotonic()
    ctx.restart_all(procs)
    return t
