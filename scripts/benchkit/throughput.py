"""Figures 1-4 and 8: the sustained closed loop and the open loop at a fixed rate.

- ``sustained``: closed loop at the maximum; accepted vs stored, catch-up, INSERTs per table,
  CPU per process kind, Redis keys written per event (the markers of figure 6).
- ``open_loop``: a fixed arrival rate; latency from the scheduled send; probe batches timed
  from their 202 until ClickHouse returns them.
"""
from __future__ import annotations

import time

from benchkit import chstats, cpu, load, redismem
from benchkit.ctx import Ctx, Poller, progress, quiet, scan_all, wait_stored
from benchkit.rig import log
from benchkit.stats import NAN, pct, per_second, per_second_pct, rate_series


def sustained(ctx: Ctx, tag: str, seconds: float, catchup_max: float = 60.0, scan: bool = True,
              plan: dict | None = None) -> dict:
    """Closed loop at the maximum for ``seconds``; then until the stored count caught up.

    ``scan``: count Redis keys per kind before and after (markers written per event);
    ``plan``: Plan fields to change (a grid point's shape).
    """
    quiet(ctx)
    before = scan_all(ctx) if scan else {}
    base = ctx.counter.stored(tag)  # events of this tag stored before (a grid point's prefill)
    poller = Poller(ctx, lambda c: c.stored(tag) - base, 1.0)
    poller.start()
    c0: dict = {}
    m0: list = []
    out = load.run(ctx.plan(tag, seconds=seconds, **(plan or {})),
                   tick=progress(ctx, "sustained", seconds, lambda: ctx.counter.stored(tag) - base),
                   at_start=lambda: (c0.update(ctx.meter.sample()), m0.append(cpu.machine_seconds())))
    c_load, t_load, m_load = ctx.meter.sample(), time.time(), cpu.machine_seconds()
    t_end = out.start + seconds
    accepted = out.accepted_events
    stored_end = ctx.counter.stored(tag) - base
    t_caught, stored = wait_stored(ctx, tag, base + accepted, catchup_max)
    stored -= base
    drained = quiet(ctx)
    c1 = ctx.meter.sample()
    points = poller.stop()
    inserts = chstats.insert_stats(ctx.counter.ch, ctx.counter.db, out.start, t_end)
    after = scan_all(ctx) if scan else {}
    spent = cpu.delta(c0, c1)
    spent["load generator"] = out.cpu_s
    done_at = t_caught if t_caught else time.time()
    e2e = {
        "seconds": seconds, "requests": len(out.records), "accepted_events": accepted, "stored_events": stored,
        "accepted_eps": accepted / seconds, "stored_eps_during_load": stored_end / seconds,
        "e2e_eps": stored / (done_at - out.start),
        "catchup_s": (t_caught - out.end) if t_caught else NAN, "caught_up": bool(t_caught),
        "drained_after_s": (time.time() - out.end) if drained is not None else NAN,
        "p50_ms": pct(out.latencies_ms(), 50), "p99_ms": pct(out.latencies_ms(), 99),
        "sessions_touched": len({r[4] for r in out.records}),
        "backlog_s": (accepted - stored_end) / (accepted / seconds) if accepted else NAN,
        "errors": out.errors, "error_samples": out.samples,
    }
    if out.errors:
        log(f"{ctx.label} sustained: non-202 answers {out.errors}; first: {out.samples}")
    if not t_caught:
        log(f"{ctx.label} sustained: stored {stored:,} of {accepted:,} within {catchup_max:.0f} s")
    busy = cpu.delta(c0, c_load)  # while the load ran: what saturates
    busy["load generator"] = out.cpu_s
    busy[cpu.OTHERS] = cpu.others(m_load - m0[0], busy)  # a shared host: what other jobs took
    wall = max(1e-9, t_load - out.start)
    grown = {name: redismem.grown(before.get(name, {}), kinds) for name, kinds in after.items()}
    answered = [(r[1], r[3]) for r in out.ok]
    lat = [(r[1], (r[1] - r[0]) * 1000) for r in out.ok]
    timeline = {
        "t0": out.start, "accepted_eps": per_second(answered, out.start, t_end),
        "stored": [(t - out.start, n) for t, n in points],
        "stored_eps": [(t - out.start, v) for t, v in rate_series(points)],
        "p50_ms": per_second_pct(lat, out.start, t_end, 50), "p99_ms": per_second_pct(lat, out.start, t_end, 99),
    }
    # CPU per 1,000 events: everything spent from the load's start until its work was done
    # (stored, counted, queues empty); CPU %: only while the load ran
    return {"e2e": e2e, "inserts": inserts, "cpu_s": spent, "cpu_per_1k_events": cpu.per_1k(spent, stored),
            "cpu_pct": {k: 100 * v / wall for k, v in busy.items()},
            "grown_keys": grown, "timeline": timeline}


# ----------------------------------------------------------------------------- open loop

def open_loop(ctx: Ctx, tag: str, rate_eps: float, seconds: float, probes_per_s: float = 5.0,
              visible_max: float = 30.0) -> dict:
    """A fixed arrival schedule at ``rate_eps`` events/s; latency from the scheduled send time;
    probe batches (own sessions) polled in ClickHouse every 0.1 s until each is visible."""
    quiet(ctx)
    rps = max(0.5, rate_eps / ctx.shape.batch)
    every = max(1, round(rps / probes_per_s))
    seen: dict[str, float] = {}
    prefix = load.probe_prefix(tag)

    def look(c: chstats.Counter) -> int:
        now = time.time()
        for sid in c.seen_sessions(prefix):
            seen.setdefault(sid, now)
        return len(seen)

    prober = Poller(ctx, look, 0.1)
    prober.start()
    counting = Poller(ctx, lambda c: c.stored(tag), 1.0)
    counting.start()
    c0: dict = {}
    m0: list = []
    out = load.run(ctx.plan(tag, seconds=seconds, rate=rps, probe_every=every),
                   at_start=lambda: (c0.update(ctx.meter.sample()), m0.append(cpu.machine_seconds())),
                   tick=progress(ctx, f"open loop at {rate_eps:,.0f} events/s", seconds))
    spent = cpu.delta(c0, ctx.meter.sample())
    spent["load generator"] = out.cpu_s
    others_pct = 100 * cpu.others(cpu.machine_seconds() - m0[0], spent) / max(1e-9, time.time() - out.start)
    probes = out.probes()
    deadline = time.time() + visible_max
    while time.time() < deadline and not set(probes) <= set(seen):
        time.sleep(0.1)
    prober.stop()
    points = counting.stop()
    lat = out.latencies_ms()
    vis = [seen[s] - t for s, t in probes.items() if s in seen]
    if len(vis) < len(probes):
        log(f"{ctx.label} open loop: {len(probes) - len(vis)} of {len(probes)} probes not visible "
            f"within {visible_max:.0f} s")
    t_end = out.start + seconds
    answered = [(r[1], r[3]) for r in out.ok]
    lat_t = [(r[1], (r[1] - r[0]) * 1000) for r in out.ok]
    return {
        "latency": {"target_eps": rate_eps, "offered_rps": rps, "seconds": seconds,
                    "achieved_eps": out.accepted_events / seconds, "requests": len(out.records),
                    "p50_ms": pct(lat, 50), "p90_ms": pct(lat, 90), "p99_ms": pct(lat, 99),
                    "max_ms": max(lat, default=NAN), "errors": out.errors, "others_cpu_pct": others_pct},
        "queryable": {"p50_s": pct(vis, 50), "p95_s": pct(vis, 95), "max_s": max(vis, default=NAN),
                      "probes": len(probes), "seen": len(vis), "poll_interval_s": 0.1},
        "timeline": {"t0": out.start, "accepted_eps": per_second(answered, out.start, t_end),
                     "stored_eps": [(t - out.start, v) for t, v in rate_series(points)],
                     "p50_ms": per_second_pct(lat_t, out.start, t_end, 50),
                     "p99_ms": per_second_pct(lat_t, out.start, t_end, 99)},
    }
