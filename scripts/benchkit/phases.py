"""The measured phases of one run, each driven only through HTTP, ClickHouse queries, Redis
INFO/MEMORY and the UFSE sink (the pipeline's internals are being reshaped underneath).

- ``sustained``: closed loop at the maximum; accepted vs stored, catch-up, INSERTs per table,
  CPU per process kind, keys written per event (markers).
- ``open_loop``: a fixed arrival rate; latency from the scheduled send; probe batches timed
  from their 202 until ClickHouse returns them.
- ``memory``: N sessions made active by batches of many sessions each; Redis bytes per session.
- ``delivery``: sessions that go idle; idle timeout passed -> delivered at UFSE.
- ``baseline``: the parse-and-push app under the same closed-loop load.

Between phases the bench waits until the broker's queues are empty, so one phase's backlog is
never measured in the next. Every wait is bounded.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from benchkit import chstats, cpu, load, redismem, rig
from benchkit.stats import NAN, pct, per_second, per_second_pct, rate_series
from benchkit.rig import log


@dataclass
class Ctx:
    """What the phases of one stack share."""

    stack: rig.Stack
    meter: cpu.Meter
    shape: load.Shape = load.Shape()
    connections: int = 8
    processes: int = 2
    sink: Optional[object] = None  # the in-process UFSE sink (None: no delivery figures)
    broker: Optional[object] = None  # redis clients (None when targeting a stack without them)
    sessions: Optional[object] = None
    counter: Optional[chstats.Counter] = None
    label: str = ""  # "run 1/3" in progress lines
    notes: list = field(default_factory=list)

    def __post_init__(self) -> None:
        import redis

        if self.counter is None:
            self.counter = chstats.Counter(self.stack.clickhouse_url, self.stack.project)
        if self.broker is None and self.stack.broker_url:
            self.broker = redis.Redis.from_url(self.stack.broker_url, socket_timeout=10)
        if self.sessions is None and self.stack.sessions_url:
            self.sessions = redis.Redis.from_url(self.stack.sessions_url, socket_timeout=30)

    def plan(self, tag: str, **kw) -> load.Plan:
        kw.setdefault("shape", self.shape)
        return load.Plan(port=self.stack.port, key=self.stack.key, tag=tag, connections=self.connections,
                         processes=self.processes, **kw)


def progress(ctx: Ctx, phase: str, total: float, stored: Optional[Callable[[], int]] = None):
    """A tick for load.run: one line every 5 s."""
    last = [0.0]

    def tick(elapsed: float, accepted: int) -> None:
        if elapsed - last[0] < 5 or elapsed > total + 1:
            return
        last[0] = elapsed
        extra = ""
        if stored:
            try:
                extra = f", {stored():,} stored"
            except Exception:
                pass
        log(f"{ctx.label} {phase}: {elapsed:.0f}/{total:.0f} s, {accepted:,} events accepted{extra}")
    return tick


def pending(ctx: Ctx) -> int:
    """Messages waiting in the Procfile workers' queues plus those held unacked."""
    if ctx.broker is None:
        return 0
    pipe = ctx.broker.pipeline(transaction=False)
    for q in ctx.stack.queues:
        pipe.llen(q)
    pipe.hlen("unacked")  # kombu's Redis transport: messages delivered, not yet acked
    return sum(pipe.execute())


def quiet(ctx: Ctx, timeout: float = 90.0) -> Optional[float]:
    """Wait until the queues were empty at two polls in a row; seconds waited (None: timed out).

    Says every 30 s how many messages are left (the pre-issue-9 session step can take minutes).
    """
    t0 = time.monotonic()
    streak, said = 0, t0
    while time.monotonic() - t0 < timeout:
        left = pending(ctx)
        streak = streak + 1 if left == 0 else 0
        if streak >= 2:
            return time.monotonic() - t0
        if time.monotonic() - said >= 30:
            said = time.monotonic()
            log(f"{ctx.label}: waiting for the workers, {left:,} messages left ({said - t0:.0f} s)")
        time.sleep(0.2)
    log(f"{ctx.label}: the queues did not drain within {timeout:.0f} s")
    return None


class Poller(threading.Thread):
    """Calls ``fn(counter)`` every ``interval`` on its own ClickHouse client; keeps (time, value)."""

    def __init__(self, ctx: Ctx, fn: Callable, interval: float) -> None:
        super().__init__(daemon=True)
        self.counter = chstats.Counter(ctx.stack.clickhouse_url, ctx.stack.project)
        self.fn, self.interval = fn, interval
        self.points: list = []
        self._stop_ev = threading.Event()

    def run(self) -> None:
        while not self._stop_ev.is_set():
            try:
                self.points.append((time.time(), self.fn(self.counter)))
            except Exception:
                pass
            self._stop_ev.wait(self.interval)

    def stop(self) -> list:
        self._stop_ev.set()
        self.join(10)
        self.counter.close()
        return self.points


def wait_stored(ctx: Ctx, tag: str, want: int, timeout: float) -> tuple[Optional[float], int]:
    """Poll until ``want`` events of ``tag`` are stored: (wall time reached or None, last count)."""
    deadline = time.time() + timeout
    n = 0
    while time.time() < deadline:
        n = ctx.counter.stored(tag)
        if n >= want:
            return time.time(), n
        time.sleep(0.2)
    return None, n


def scan_all(ctx: Ctx) -> dict:
    """Key kinds of both Redis servers (sessions, broker)."""
    out = {}
    for name, r in (("sessions", ctx.sessions), ("broker", ctx.broker)):
        if r is not None:
            out[name] = redismem.scan_kinds(r, ctx.stack.prefix)
    return out


# ----------------------------------------------------------------------------- sustained

def sustained(ctx: Ctx, tag: str, seconds: float, catchup_max: float = 60.0, scan: bool = True,
              plan: Optional[dict] = None) -> dict:
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
    out = load.run(ctx.plan(tag, seconds=seconds, **(plan or {})),
                   tick=progress(ctx, "sustained", seconds, lambda: ctx.counter.stored(tag) - base),
                   at_start=lambda: c0.update(ctx.meter.sample()))
    c_load, t_load = ctx.meter.sample(), time.time()
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
            "cpu_pct": {k: 100 * v / wall for k, v in busy.items()} | {"load generator": 100 * out.cpu_s / seconds},
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
    out = load.run(ctx.plan(tag, seconds=seconds, rate=rps, probe_every=every),
                   tick=progress(ctx, f"open loop at {rate_eps:,.0f} events/s", seconds))
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
                    "max_ms": max(lat, default=NAN), "errors": out.errors},
        "queryable": {"p50_s": pct(vis, 50), "p95_s": pct(vis, 95), "max_s": max(vis, default=NAN),
                      "probes": len(probes), "seen": len(vis), "poll_interval_s": 0.1},
        "timeline": {"t0": out.start, "accepted_eps": per_second(answered, out.start, t_end),
                     "stored_eps": [(t - out.start, v) for t, v in rate_series(points)],
                     "p50_ms": per_second_pct(lat_t, out.start, t_end, 50),
                     "p99_ms": per_second_pct(lat_t, out.start, t_end, 99)},
    }


# ----------------------------------------------------------------------------- memory

def memory(ctx: Ctx, tag: str, sessions: int, marker_names: list[str], timeout: float = 240.0,
           drain_max: float = 900.0) -> dict:
    """Make ``sessions`` sessions active (50 sessions per batch), then Redis bytes per session.

    The figure is taken once every batch is stored and counted (queues empty, keyspace still),
    however long the session step takes (bounded by ``drain_max``; the time is reported).
    """
    if ctx.sessions is None:
        return {"sessions": 0, "bytes_per_session": NAN, "kinds": {}, "note": "no sessions Redis URL"}
    quiet(ctx)
    r = ctx.sessions
    per_batch = min(ctx.shape.batch, 50)
    pool = sessions // ctx.connections
    shape = load.Shape(batch=per_batch, event_bytes=ctx.shape.event_bytes, sessions_per_batch=per_batch,
                       session_pool=pool)
    used0 = redismem.used_memory(r)
    z0 = redismem.zset_bytes(r)
    keys0 = r.dbsize()
    out = load.run(ctx.plan(tag, shape=shape, seconds=timeout, max_requests=-(-pool // per_batch)),
                   tick=progress(ctx, f"{sessions:,} sessions", timeout, lambda: ctx.counter.stored(tag)))
    accepted = out.accepted_events
    n = min(accepted, pool * ctx.connections)  # sessions made active (the last request may wrap)
    wait_stored(ctx, tag, accepted, timeout)
    drained = quiet(ctx, drain_max)
    counted_after = (time.time() - out.end) if drained is not None else NAN
    # the session step may finish a moment after the last message is acked: wait for a still keyspace
    size, still = -1, 0
    for _ in range(60):
        now = r.dbsize()
        still = still + 1 if now == size else 0
        size = now
        if still >= 2:
            break
        time.sleep(0.5)
    used1 = redismem.used_memory(r)
    z1 = redismem.zset_bytes(r)
    kinds = redismem.scan_kinds(r, ctx.stack.prefix, match=f"*{tag}*")
    for k in kinds.values():
        k["bytes"] = k["keys"] * k["bytes_each"]
        k["per_session"] = k["bytes"] / n if n else NAN
    index_bytes = z1[1] - z0[1]
    kinds["(sorted-set indexes)"] = {"keys": 0, "members": z1[0] - z0[0], "bytes": index_bytes,
                                      "per_session": index_bytes / n if n else NAN, "type": "zset"}
    marker_bytes = sum(k["bytes"] for name, k in kinds.items() if redismem.is_marker_kind(name, marker_names))
    delta = used1 - used0
    return {"sessions": n, "requests": len(out.ok), "counted_after_s": counted_after,
            "used_memory_before": used0, "used_memory_after": used1,
            "used_memory_delta": delta, "keys_added": size - keys0,
            "bytes_per_session": delta / n if n else NAN,
            "bytes_per_session_without_markers": (delta - marker_bytes) / n if n else NAN,
            "accounted_per_session": sum(k["bytes"] for k in kinds.values()) / n if n else NAN,
            "kinds": kinds, "errors": out.errors}


def markers(grown: dict, events: int, names: list[str], setting: tuple[str, float]) -> dict:
    """Marker memory per 1,000 events/s sustained, from the keys the sustained phase added.

    Marker kinds are those the session store builds markers from (read from its code); their
    TTL is the setting's default when Redis agrees, else what Redis shows (and that is said).
    """
    name, ttl_setting = setting
    found = {k: v for k, v in grown.get("sessions", {}).items() if redismem.is_marker_kind(k, names)}
    out = {"kinds": names, "setting": name, "ttl_setting_s": ttl_setting, "found": sorted(found)}
    new = sum(v["new"] for v in found.values())
    if not found:
        out.update(redismem.projected(0, events, ttl_setting, NAN), new_keys=0, ttl_observed_s=NAN,
                   note="no marker keys were written")
        out["mb_per_1k_eps"] = 0.0 if names else NAN
        return out
    observed = max(v.get("ttl_s", NAN) for v in found.values())
    each = sum(v["bytes_each"] * v["new"] for v in found.values()) / new
    agree = observed == observed and ttl_setting == ttl_setting and abs(observed - ttl_setting) <= max(120, 0.1 * ttl_setting)
    ttl = ttl_setting if agree else observed
    out.update(redismem.projected(new, events, ttl, each), new_keys=new, ttl_observed_s=observed,
               ttl_source=f"{name} (Redis agrees)" if agree else "the TTL Redis shows (differs from the setting)")
    return out


def ttl_kinds(grown: dict, events: int, sessions: int) -> dict:
    """Every key kind with a TTL that grows with traffic (more new keys in the sustained phase
    than twice the sessions it touched, so not per-session state), projected like the markers."""
    out = {}
    for server, kinds in grown.items():
        for k, v in kinds.items():
            if v.get("ttl_s", -1) > 0 and v["new"] > 2 * sessions:
                out[f"{server}: {k}"] = redismem.projected(v["new"], events, v["ttl_s"], v["bytes_each"])
    return out


# ----------------------------------------------------------------------------- delivery

def delivery(ctx: Ctx, tag: str, sessions: int, batches: int = 2, timeout: float = 120.0) -> dict:
    """``sessions`` sessions of ``batches`` batches each, then idle: until each reached UFSE."""
    if ctx.sink is None:
        return {"sessions": 0, "p50_s": NAN, "p95_s": NAN, "note": "no UFSE sink to read deliveries from"}
    quiet(ctx)
    pool = max(1, sessions // ctx.connections)
    shape = load.Shape(batch=ctx.shape.batch, event_bytes=ctx.shape.event_bytes, sessions_per_batch=1, session_pool=pool)
    n0 = len(ctx.sink.snapshot())
    out = load.run(ctx.plan(tag, shape=shape, seconds=60, max_requests=pool * batches))
    last = out.last_answer()
    idle = ctx.stack.idle_timeout
    delivered: dict[str, float] = {}
    deadline = time.time() + idle + timeout
    while time.time() < deadline and len(delivered) < len(last):
        for d in ctx.sink.snapshot()[n0:]:
            body = d.get("body") or {}
            sid = (body.get("session") or {}).get("session_id", "")
            if d.get("status") == 200 and sid in last:
                delivered.setdefault(sid, d["received_at"])
        time.sleep(0.2)
    lags = [delivered[s] - (last[s] + idle) for s in delivered]
    if len(delivered) < len(last):
        log(f"{ctx.label} delivery: {len(last) - len(delivered)} of {len(last)} sessions not delivered")
    t_last = max(delivered.values(), default=time.time())
    time.sleep(max(0.0, t_last + 3 - time.time()))  # sessions rows may be written after delivery, batched
    ins = chstats.insert_stats(ctx.counter.ch, ctx.counter.db, min(last.values(), default=out.start) + idle, t_last + 3)
    sess = ins["tables"].get("sessions", {})
    return {"idle_timeout_s": idle, "sessions": len(last), "delivered": len(delivered),
            "p50_s": pct(lags, 50), "p95_s": pct(lags, 95), "max_s": max(lags, default=NAN),
            "sessions_rows_per_insert": sess.get("rows_per_insert", NAN), "sessions_inserts": sess.get("inserts", 0),
            "errors": out.errors}


# ----------------------------------------------------------------------------- baseline

def baseline(dir: Path, redis, cfg: rig.WebConfig, shape: load.Shape, seconds: float,
             connections: int, processes: int, label: str = "", warmup: float = 1.0) -> dict:
    """The parse-and-push app under ``cfg`` and the same closed-loop load (``redis``: its Proc)."""
    import redis as redis_lib

    p = rig.start_baseline(dir, redis.url, cfg)
    r = redis_lib.Redis.from_url(redis.url)
    try:
        plan = load.Plan(port=p.port, key="baseline", tag="b-", shape=shape, connections=connections,
                         processes=processes, seconds=warmup)
        if warmup:
            load.run(plan)
        meter = cpu.Meter()
        meter.add("baseline web", p.pid)
        meter.add("baseline redis", redis.pid)
        c0 = meter.sample()
        out = load.run(load.Plan(**{**plan.__dict__, "seconds": seconds}))
        spent = cpu.delta(c0, meter.sample())
        spent["load generator"] = out.cpu_s
    finally:
        p.stop()
        r.unlink("baseline:events")
    lat = out.latencies_ms()
    eps = out.accepted_events / seconds
    log(f"{label}baseline {cfg.label}: {eps:,.0f} events/s, p99 {pct(lat, 99):.1f} ms"
        + (f", errors {out.errors}" if out.errors else ""))
    return {"config": cfg.label, "eps": eps, "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
            "errors": out.errors, "cpu_per_1k_events": cpu.per_1k(spent, out.accepted_events)}
