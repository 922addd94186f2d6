"""Figures 5 and 6: session state in Redis, batch markers, and delivery after the idle timeout.

- ``memory``: N sessions made active by batches of many sessions each; Redis bytes per session.
- ``markers``, ``ttl_kinds``: what keys written per event cost at 1,000 events/s over their TTL.
- ``delivery``: sessions that go idle; idle timeout passed -> delivered at UFSE.
"""
from __future__ import annotations

import time

from benchkit import chstats, load, redismem
from benchkit.ctx import Ctx, progress, quiet, wait_stored
from benchkit.rig import log
from benchkit.stats import NAN, pct


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
    both = observed == observed and ttl_setting == ttl_setting  # neither is NaN
    agree = both and abs(observed - ttl_setting) <= max(120, 0.1 * ttl_setting)
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
    shape = load.Shape(batch=ctx.shape.batch, event_bytes=ctx.shape.event_bytes, sessions_per_batch=1,
                       session_pool=pool)
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
