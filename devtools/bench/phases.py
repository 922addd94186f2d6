"""The phases of a run, driven only through HTTP, ClickHouse, Redis and the UFSE sink:
``sustained`` (figures 1, 4, 8), ``open_loop`` (2, 3), ``memory`` and ``markers`` (6), ``delivery`` (5).

Before each phase the bench waits until the broker's queues are empty and nothing is held
unacked, so no phase measures the previous one's backlog. Every wait is bounded and goes through
``devtools.wait.until``.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass

from devtools import load
from devtools.bench import measure
from devtools.bench.measure import MARKER, OTHERS, delta, machine_seconds, per_1k, projected
from devtools.bench.rig import QUEUES, Stack, log
from devtools.bench.stats import NAN, pct
from devtools.wait import until


@dataclass
class Ctx:
    """What the phases of one stack share."""

    stack: Stack
    meter: measure.Meter
    shape: load.Shape = load.Shape()
    connections: int = 8
    processes: int = 2
    sink: object | None = None  # the UFSE sink's deliveries (None: no delivery figure)
    label: str = ""  # "run 1/3" in progress lines

    def __post_init__(self) -> None:
        import redis

        self.ch = measure.ClickHouse(self.stack.clickhouse_url, self.stack.project)
        s = self.stack
        self.broker = redis.Redis.from_url(s.broker_url, socket_timeout=10) if s.broker_url else None
        self.sessions = redis.Redis.from_url(s.sessions_url, socket_timeout=30) if s.sessions_url else None

    def plan(self, tag: str, **kw) -> load.Plan:
        kw.setdefault("shape", self.shape)
        return load.Plan(port=self.stack.port, key=self.stack.key, tag=tag, connections=self.connections,
                         processes=self.processes, **kw)

    def tick(self, phase: str, total: float):
        """A progress line every 5 s for load.run."""
        last = [0.0]

        def tick(elapsed: float, accepted: int) -> None:
            if elapsed - last[0] >= 5 and elapsed <= total + 1:
                last[0] = elapsed
                log(f"{self.label} {phase}: {elapsed:.0f}/{total:.0f} s, {accepted:,} events accepted")
        return tick

    def pending(self) -> int:
        """Messages waiting in the workers' queues plus those held unacked (kombu's ``unacked``)."""
        if self.broker is None:
            return 0
        pipe = self.broker.pipeline(transaction=False)
        for q in QUEUES:
            pipe.llen(q)
        pipe.hlen("unacked")
        return sum(pipe.execute())

    def quiet(self, timeout: float = 90.0) -> float | None:
        """Wait until the queues were empty at two polls in a row; seconds waited (None: not)."""
        waited = until(steady(self.pending, want=0), "the broker's queues to drain", timeout=timeout,
                       raises=False)
        if waited is None:
            log(f"{self.label}: the queues did not drain within {timeout:.0f} s ({self.pending():,} left)")
        return waited

    def wait_stored(self, tag: str, want: int, timeout: float) -> tuple[float | None, int]:
        """Until ``want`` events of ``tag`` are stored: (wall time reached or None, last count)."""
        n = [0]

        def enough() -> bool:
            n[0] = self.ch.stored(tag)
            return n[0] >= want
        ok = until(enough, f"{want:,} events of {tag} stored", timeout=timeout, raises=False)
        return (time.time() if ok is not None else None), n[0]

    def kinds(self) -> dict:
        """Key kinds of the sessions Redis."""
        return measure.scan_kinds(self.sessions, self.stack.prefix) if self.sessions else {}


def steady(read, want=None, times: int = 2):
    """A check for ``until``: ``read()`` gave the same value (``want``, if given) ``times`` polls in a row."""
    seen: list = []

    def check() -> bool:
        seen.append(read())
        del seen[:-times]
        return len(seen) == times and len(set(seen)) == 1 and want in (None, seen[0])
    return check


def _cpu_from_start(ctx: Ctx, c0: dict, m0: list):
    """``at_start`` for load.run: the CPU counters as the load begins."""
    return lambda: (c0.update(ctx.meter.sample()), m0.append(machine_seconds()))


def sustained(ctx: Ctx, tag: str, seconds: float, catchup_max: float = 60.0) -> dict:
    """Closed loop at the maximum for ``seconds``; then until the stored count caught up; Redis
    keys per kind before and after (the markers written per event)."""
    ctx.quiet()
    before, c0, m0 = ctx.kinds(), {}, []
    out = load.run(ctx.plan(tag, seconds=seconds), tick=ctx.tick("sustained", seconds),
                   at_start=_cpu_from_start(ctx, c0, m0))
    busy = delta(c0, ctx.meter.sample())  # while the load ran: CPU %
    wall, m_load = max(1e-9, time.time() - out.start), machine_seconds()
    accepted = out.accepted_events
    stored_end = ctx.ch.stored(tag)
    t_caught, stored = ctx.wait_stored(tag, accepted, catchup_max)
    drained = ctx.quiet()
    spent = delta(c0, ctx.meter.sample())  # until the work was done: CPU per 1,000 events
    inserts = ctx.ch.inserts(out.start, out.start + seconds)
    after = ctx.kinds()
    busy["load generator"] = spent["load generator"] = out.cpu_s
    busy[OTHERS] = measure.others(m_load - m0[0], busy)  # a shared host: what other jobs took
    lat = out.latencies_ms()
    e2e = {
        "seconds": seconds, "requests": len(out.records), "accepted_events": accepted, "stored_events": stored,
        "accepted_eps": accepted / seconds, "stored_eps_during_load": stored_end / seconds,
        "e2e_eps": stored / ((t_caught or time.time()) - out.start),
        "catchup_s": (t_caught - out.end) if t_caught else NAN, "caught_up": bool(t_caught),
        "drained_after_s": (time.time() - out.end) if drained is not None else NAN,
        "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "sessions_touched": len({r[4] for r in out.records}),
        "errors": out.errors,
    }
    if out.errors:
        log(f"{ctx.label} sustained: non-202 answers {out.errors}; first: {out.samples}")
    if not t_caught:
        log(f"{ctx.label} sustained: stored {stored:,} of {accepted:,} within {catchup_max:.0f} s")
    return {"e2e": e2e, "inserts": inserts, "cpu_per_1k_events": per_1k(spent, stored),
            "cpu_pct": {k: 100 * v / wall for k, v in busy.items()},
            "grown_keys": measure.grown(before, after)}


def open_loop(ctx: Ctx, tag: str, rate_eps: float, seconds: float, probes_per_s: float = 5.0,
              visible_max: float = 30.0) -> dict:
    """A fixed arrival schedule at ``rate_eps`` events/s; latency from the scheduled send time;
    probe batches (own sessions) looked for in ClickHouse every 0.1 s until each is visible."""
    ctx.quiet()
    rps = max(0.5, rate_eps / ctx.shape.batch)
    seen: dict[str, float] = {}
    probes: dict[str, float] = {}
    done = threading.Event()

    def look() -> bool:
        now = time.time()
        for sid in ctx.ch.sessions(load.probe_prefix(tag)):
            seen.setdefault(sid, now)
        return done.is_set() and probes.keys() <= seen.keys()
    prober = threading.Thread(target=until, args=(look, "probes queryable"), daemon=True,
                              kwargs={"timeout": seconds + visible_max + 5, "interval": 0.1, "raises": False})
    prober.start()
    c0, m0 = {}, []
    out = load.run(ctx.plan(tag, seconds=seconds, rate=rps, probe_every=max(1, round(rps / probes_per_s))),
                   at_start=_cpu_from_start(ctx, c0, m0), tick=ctx.tick(f"open loop at {rate_eps:,.0f} events/s",
                                                                          seconds))
    spent = delta(c0, ctx.meter.sample())
    spent["load generator"] = out.cpu_s
    others_pct = 100 * measure.others(machine_seconds() - m0[0], spent) / max(1e-9, time.time() - out.start)
    probes.update(out.probes())
    done.set()
    prober.join(visible_max + 10)
    lat, snap = out.latencies_ms(), dict(seen)
    vis = [snap[s] - t for s, t in probes.items() if s in snap]
    if len(vis) < len(probes):
        log(f"{ctx.label} open loop: {len(probes) - len(vis)} of {len(probes)} probes not visible in time")
    return {
        "latency": {"target_eps": rate_eps, "offered_rps": rps, "seconds": seconds,
                    "achieved_eps": out.accepted_events / seconds, "requests": len(out.records),
                    "p50_ms": pct(lat, 50), "p90_ms": pct(lat, 90), "p99_ms": pct(lat, 99),
                    "max_ms": max(lat, default=NAN), "errors": out.errors, "others_cpu_pct": others_pct},
        "queryable": {"p50_s": pct(vis, 50), "p95_s": pct(vis, 95), "max_s": max(vis, default=NAN),
                      "probes": len(probes), "seen": len(vis), "poll_interval_s": 0.1},
    }


def memory(ctx: Ctx, tag: str, sessions: int, timeout: float = 240.0, drain_max: float = 900.0) -> dict:
    """Make ``sessions`` sessions active (50 per batch); once every batch is stored and counted
    (queues empty, a still keyspace; bounded by ``drain_max``), Redis bytes per session."""
    if ctx.sessions is None:
        return {"sessions": 0, "bytes_per_session": NAN, "kinds": {}, "note": "no sessions Redis URL"}
    ctx.quiet()
    r = ctx.sessions
    per_batch, pool = min(ctx.shape.batch, 50), sessions // ctx.connections
    shape = dataclasses.replace(ctx.shape, batch=per_batch, sessions_per_batch=per_batch, session_pool=pool)
    used0 = measure.used_memory(r)
    out = load.run(ctx.plan(tag, shape=shape, seconds=timeout, max_requests=-(-pool // per_batch)),
                   tick=ctx.tick(f"{sessions:,} sessions", timeout))
    n = min(out.accepted_events, pool * ctx.connections)  # sessions made active (the last request may wrap)
    ctx.wait_stored(tag, out.accepted_events, timeout)
    drained = ctx.quiet(drain_max)
    counted_after = (time.time() - out.end) if drained is not None else NAN
    # the session step may finish a moment after the last message is acked: a still keyspace
    until(steady(r.dbsize, times=3), "a still keyspace", timeout=30, interval=0.5, raises=False)
    used = measure.used_memory(r) - used0
    kinds = measure.scan_kinds(r, ctx.stack.prefix, match=f"*{tag}*")
    for k in kinds.values():
        k["bytes"] = k["keys"] * k["bytes_each"]
        k["per_session"] = k["bytes"] / n if n else NAN
    markers = kinds.get(MARKER, {}).get("bytes", 0)
    return {"sessions": n, "requests": len(out.ok), "counted_after_s": counted_after, "used_memory_delta": used,
            "bytes_per_session": used / n if n else NAN,
            "bytes_per_session_without_markers": (used - markers) / n if n else NAN,
            "kinds": kinds, "errors": out.errors}


def markers(grown: dict, events: int) -> dict:
    """Marker memory per 1,000 events/s sustained, from the marker keys the sustained phase added.
    Their TTL is BATCH_MARKER_TTL's default when Redis agrees, else what Redis shows (and that is said)."""
    from app.settings import defaults

    setting = float(defaults().batch_marker_ttl)
    m = grown.get(MARKER)
    if not m:
        return {**projected(0, events, setting, NAN), "mb_per_1k_eps": 0.0, "new_keys": 0, "kind": MARKER,
                "note": "no marker keys were written"}
    agree = abs(m["ttl_s"] - setting) <= max(120, 0.1 * setting)
    return {**projected(m["new"], events, setting if agree else m["ttl_s"], m["bytes_each"]),
            "new_keys": m["new"], "kind": MARKER, "ttl_observed_s": m["ttl_s"],
            "ttl_source": "BATCH_MARKER_TTL (Redis agrees)" if agree else "the TTL Redis shows (not BATCH_MARKER_TTL)"}


def delivery(ctx: Ctx, tag: str, sessions: int, batches: int = 2, timeout: float = 120.0) -> dict:
    """``sessions`` sessions of ``batches`` batches each, then idle: until each reached UFSE."""
    if ctx.sink is None:
        return {"sessions": 0, "p50_s": NAN, "p95_s": NAN, "note": "no UFSE sink to read deliveries from"}
    ctx.quiet()
    pool = max(1, sessions // ctx.connections)
    shape = dataclasses.replace(ctx.shape, sessions_per_batch=1, session_pool=pool)
    n0 = len(ctx.sink.snapshot())
    out = load.run(ctx.plan(tag, shape=shape, seconds=60, max_requests=pool * batches))
    last = out.last_answer()
    idle = ctx.stack.idle_timeout
    delivered: dict[str, float] = {}

    def all_delivered() -> bool:
        for d in ctx.sink.snapshot()[n0:]:
            sid = ((d.get("body") or {}).get("session") or {}).get("session_id", "")
            if d.get("status") == 200 and sid in last:
                delivered.setdefault(sid, d["received_at"])
        return len(delivered) >= len(last)
    until(all_delivered, "sessions delivered at UFSE", timeout=idle + timeout, raises=False)
    lags = [delivered[s] - (last[s] + idle) for s in delivered]
    if len(delivered) < len(last):
        log(f"{ctx.label} delivery: {len(last) - len(delivered)} of {len(last)} sessions not delivered")
    t_last = max(delivered.values(), default=time.time())
    time.sleep(max(0.0, t_last + 3 - time.time()))  # sessions rows may be written after delivery, batched
    sess = ctx.ch.inserts(min(last.values(), default=out.start) + idle, t_last + 3)["tables"].get("sessions", {})
    return {"idle_timeout_s": idle, "sessions": len(last), "delivered": len(delivered),
            "p50_s": pct(lags, 50), "p95_s": pct(lags, 95), "max_s": max(lags, default=NAN),
            "sessions_rows_per_insert": sess.get("rows_per_insert", NAN), "sessions_inserts": sess.get("inserts", 0),
            "errors": out.errors}
