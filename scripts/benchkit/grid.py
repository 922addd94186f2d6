"""How cost grows: one factor at a time from the base point, and where each part saturates.

Base point: closed loop on 8 connections, 50 events of ~400 B per request, each request one
session of 50 per connection, 2 events-worker processes. Factors: batch size (1, 20, 200),
event size (200 B, 2 KB, 8 KB), active sessions (1,000 and 100,000, made active first),
events-worker concurrency (1, 4: the Procfile's ``EVENTS_CONCURRENCY``, a restarted stack), and
gzip bodies at the base point (what the retired ``bench_ingest.py`` also measured).
Each point: one sustained phase (accepted, stored, catch-up, CPU per kind, INSERTs), one
open-loop phase at 70 % of that point's end-to-end rate (p99), and the baseline under the same
shape (at every point, so each ratio compares figures of the same minutes). One run per point, bounded so
the whole grid stays under 30 minutes on 2 cores.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from benchkit import baseline, cpu, limits, load, redismem, rig, runner, state, throughput
from benchkit.ctx import Ctx
from benchkit.rig import log
from benchkit.stats import fmt, isnum, ratio

BASE = ("base", "50 x 400 B")
POINTS = [BASE, ("batch size", 1), ("batch size", 20), ("batch size", 200),
          ("event size", 200), ("event size", 2048), ("event size", 8192), ("content encoding", "gzip"),
          ("active sessions", 1000), ("active sessions", 100_000),
          ("events concurrency", 1), ("events concurrency", 4)]


def shape_of(factor: str, value, cfg: runner.Config) -> load.Shape:
    """The load shape of a grid point (its session pool per connection included)."""
    s = cfg.shape
    if factor == "batch size":
        return dataclasses.replace(s, batch=int(value))
    if factor == "event size":
        return dataclasses.replace(s, event_bytes=int(value))
    if factor == "active sessions":
        return dataclasses.replace(s, session_pool=max(1, int(value) // cfg.connections))
    if factor == "content encoding":
        return dataclasses.replace(s, gzip=True)
    return s


def point(ctx: Ctx, i: int, factor: str, value, cfg: runner.Config, seconds: dict,
          base: dict, cap: dict) -> dict:
    """Measure one grid point on ``ctx``'s stack."""
    shape = shape_of(factor, value, cfg)
    pctx = dataclasses.replace(ctx, shape=shape, label=f"grid {i}/{len(POINTS)} {factor} {value}")
    tag = f"g{i}-"
    mem = {}
    if factor == "active sessions":
        mem = state.memory(pctx, tag, int(value), redismem.marker_names(rig.ROOT))
    s = throughput.sustained(pctx, tag, seconds["sustained"], scan=False)
    e = s["e2e"]
    rate = 0.7 * (e["e2e_eps"] if isnum(e["e2e_eps"]) and e["e2e_eps"] > 0 else e["accepted_eps"])
    o = throughput.open_loop(pctx, f"g{i}o-", rate, seconds["open"])
    # the baseline at every point, so each ratio compares two figures of the same minutes
    b = baseline.baseline(base["dir"], base["redis"], base["best"], shape, seconds["baseline"],
                          cfg.connections, cfg.processes, label=f"{pctx.label}: ")
    b_eps = b["eps"]
    tables = s["inserts"]["tables"]
    row = {
        "factor": factor, "value": value, "shape": dataclasses.asdict(shape),
        "accepted_eps": e["accepted_eps"], "rps": e["requests"] / seconds["sustained"],
        "stored_eps_during_load": e["stored_eps_during_load"], "e2e_eps": e["e2e_eps"], "catchup_s": e["catchup_s"],
        "p99_closed_ms": e["p99_ms"], "p50_70_ms": o["latency"]["p50_ms"], "p99_70_ms": o["latency"]["p99_ms"],
        "queryable_p95_s": o["queryable"]["p95_s"],
        "inserts": {t: {"rows_per_insert": v["rows_per_insert"], "inserts_per_s": v["inserts_per_s"]}
                    for t, v in tables.items()},
        "baseline_eps": b_eps, "ratio": ratio(e["e2e_eps"], b_eps),
        "cpu_pct": s["cpu_pct"], "cpu_per_1k_events": s["cpu_per_1k_events"],
        "redis_bytes_per_session": mem.get("bytes_per_session", float("nan")),
        "backlog_s": e["backlog_s"],
        "saturates": limits.saturation(s["cpu_pct"], cap, os.cpu_count() or 1, e["backlog_s"]),
        "busiest": limits.top(s["cpu_pct"]),
        "others_pct": s["cpu_pct"].get(cpu.OTHERS, float("nan")),
    }
    log(f"{pctx.label}: end to end {fmt(row['e2e_eps'], 0)} events/s, p99 at 70% {fmt(row['p99_70_ms'])} ms; "
        f"saturates: {'; '.join(row['saturates']) or 'nothing'}")
    return row


def run(cfg: runner.Config, quick: bool = False) -> dict:
    """The whole grid; returns its document (``grid`` rows)."""
    seconds = {"sustained": 6.0, "open": 4.0, "baseline": 3.0} if quick else \
        {"sustained": 15.0, "open": 8.0, "baseline": 8.0}
    t0 = time.time()
    tag = uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="observer-bench-grid-"))
    rows: list[dict] = []
    servers = stack = None
    try:
        servers = rig.Servers(tmp, tag)
        base = {"dir": tmp / "baseline-app", "redis": servers.baseline_redis}
        base["best"] = baseline.calibrate(base["dir"], servers.baseline_redis,
                                        dataclasses.replace(cfg, quick=True, calibrate_s=3.0))
        db = f"bench_{tag}"
        current = None
        for i, (factor, value) in enumerate(POINTS, 1):
            conc = str(value) if factor == "events concurrency" else "2"
            if conc != current:
                if stack is not None:
                    stack.stop()
                log(f"grid: starting Observer with EVENTS_CONCURRENCY={conc}")
                stack = rig.start_stack(servers, f"c{conc}", db=db, prefix=f"obsc{conc}:",
                                        procfile_env={"EVENTS_CONCURRENCY": conc})
                meter = cpu.Meter()
                runner.add_meter(meter, stack, servers, {})
                ctx = Ctx(stack=stack, meter=meter, shape=cfg.shape, connections=cfg.connections,
                                 processes=cfg.processes, sink=servers.sink)
                load.run(ctx.plan(f"w{conc}-", seconds=3))  # warm-up, not measured
                cap = runner.capacity(stack)
                current = conc
            rows.append(point(ctx, i, factor, value, cfg, seconds, base, cap))
        overrides = {k: v for k, (v, _w) in stack.overrides.items()}
    finally:
        if stack is not None:
            stack.stop()
        if servers is not None:
            servers.stop()
        if not cfg.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return {"schema": "observer-bench-grid/1", "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
            "duration_s": time.time() - t0, "machine": runner.machine({}), "code": runner.code_version(),
            "config": {"seconds": seconds, "connections": cfg.connections, "processes": cfg.processes,
                       "overrides": overrides, "baseline": base["best"].label}, "grid": rows}


def table(doc: dict) -> str:
    """The grid as a Markdown table (the README's "How cost grows")."""
    head = ("| factor | value | accepted events/s (req/s) | end to end events/s | catch-up s | p99 at 70 % ms "
            "| events rows/INSERT, INSERTs/s | session_batches rows/INSERT | baseline events/s (ratio) "
            "| busiest (% of one core) | other jobs % | saturates |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in doc["grid"]:
        ev = r["inserts"].get("events", {})
        sb = r["inserts"].get("session_batches", {})
        value = r["value"]
        if r["factor"] == "event size":
            value = f"{value:,} B"
        elif r["factor"] == "active sessions":
            value = f"{value:,}"
        lines.append(
            f"| {r['factor']} | {value} | {fmt(r['accepted_eps'], 0)} ({fmt(r['rps'], 0)}) | {fmt(r['e2e_eps'], 0)} "
            f"| {fmt(r['catchup_s'], 2)} | {fmt(r['p99_70_ms'])} | {fmt(ev.get('rows_per_insert'), 0)}, "
            f"{fmt(ev.get('inserts_per_s'), 2)} | {fmt(sb.get('rows_per_insert'), 0)} "
            f"| {fmt(r['baseline_eps'], 0)} ({fmt(r['ratio'], 2)}x) | {r['busiest']} "
            f"| {fmt(r.get('others_pct'), 0)} | {'; '.join(r['saturates']) or '-'} |")
    return "\n".join(lines)
