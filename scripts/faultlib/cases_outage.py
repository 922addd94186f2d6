"""Cases 5-10: a dependency frozen, down, full or gone for a (compressed) hour."""
from __future__ import annotations

import time

import redis

from faultlib import reconcile

HOUR = 3600.0


def broker_sigstop(ctx) -> float:
    """5. broker Redis SIGSTOP for 10 s: 503 with Retry-After, no 202 for what was not enqueued."""
    ctx.warmup()
    ctx.extra["frozen_at"] = time.monotonic()
    ctx.rig.broker.sigstop()
    time.sleep(10)
    ctx.rig.broker.sigcont()
    ctx.extra["thawed_at"] = t = time.monotonic()
    return t


def frozen_answers(ctx) -> None:
    """After case 5 (all requests answered): what requests sent while the broker was frozen got."""
    a, b = ctx.extra["frozen_at"], ctx.extra["thawed_at"]
    sent = [(t1 - t0, st) for t0, t1, st in ctx.load.stats.requests if a <= t0 < b]
    statuses = dict(__import__("collections").Counter(st for _, st in sent))
    slowest = max((d for d, _ in sent), default=0.0)
    ctx.result.notes.append(f"requests sent while the broker was frozen: {len(sent)}, answered {statuses}, "
                            f"slowest {slowest:.1f}s")
    ctx.result.check("503 answered while the broker was frozen", statuses.get(503, 0) > 0, str(statuses))
    ctx.result.check("every 503 carried Retry-After", ctx.load.stats.retry_after_missing[503] == 0,
                     f"{ctx.load.stats.retry_after_missing[503]} without")
    hung = sum(1 for d, st in sent if st == "timeout")
    ctx.result.check("no request thread left hanging (every request answered within 30 s)", hung == 0,
                     f"{hung} timed out; slowest {slowest:.1f}s")


def sessions_redis_down(ctx) -> float:
    """6. a sessions Redis separate from the broker, unavailable for a few seconds."""
    ctx.warmup()
    ctx.rig.sessions_redis.kill9()
    time.sleep(5)
    ctx.rig.sessions_redis.restart()
    return time.monotonic()


def maxmemory_ch_down(ctx) -> float:
    """7. Redis at maxmemory (noeviction) during a ClickHouse outage: 503, nothing evicted, nothing lost."""
    r = redis.Redis.from_url(ctx.rig.broker.url)
    used = int(r.info("memory")["used_memory"])
    limit = used + ctx.scale.maxmemory_headroom
    r.config_set("maxmemory", str(limit))
    ctx.result.notes.append(f"broker maxmemory set to {limit // 1024} KiB ({used // 1024} KiB used), noeviction")
    ctx.warmup()
    ch = ctx.rig.servers.ch
    ch.stop()
    before = ctx.statuses()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and ctx.delta(before, ctx.statuses()).get(503, 0) == 0:
        time.sleep(0.5)
    time.sleep(3)
    during = ctx.delta(before, ctx.statuses())
    ch.restart()
    t = time.monotonic()
    ctx.result.check("503 once the broker was full", during.get(503, 0) > 0, str(during))
    ctx.result.check("nothing evicted", int(r.info("stats")["evicted_keys"]) == 0,
                     f"evicted_keys={r.info('stats')['evicted_keys']}")
    return t


def ch_down_hour(ctx) -> float:
    """8. ClickHouse stopped for an hour (compressed by RETRY_TIME_SCALE)."""
    ctx.warmup()
    outage = HOUR * float(ctx.rig.overrides["RETRY_TIME_SCALE"])
    ctx.result.notes.append(f"ClickHouse down for {outage:.0f}s = 1 h x RETRY_TIME_SCALE")
    ctx.rig.servers.ch.stop()
    time.sleep(outage)
    ctx.rig.servers.ch.restart()
    return time.monotonic()


def no_dead_letters(ctx) -> None:
    """After an outage: nothing was dead-lettered."""
    dl = reconcile.dead_letters(ctx.rig)
    ctx.result.check("no dead letters", sum(dl.values()) == 0, str(dict(dl)) or "none")


def pg_down(ctx) -> float:
    """9. PostgreSQL stopped for 60 s under load (known keys keep working from the cache)."""
    ctx.warmup()
    before = ctx.statuses()
    ctx.rig.servers.pg.stop()
    time.sleep(60)
    during = ctx.delta(before, ctx.statuses())
    ctx.rig.servers.pg.restart()
    t = time.monotonic()
    bad = {k: v for k, v in during.items() if k in (401, 500, 503)}
    ctx.result.notes.append(f"answers while PostgreSQL was down: {during}")
    ctx.result.check("202 for the known key throughout the outage", during.get(202, 0) > 0 and not bad,
                     str(during))
    return t


def ufse_down_hour(ctx) -> float:
    """10. UFSE down for an hour (compressed), then back."""
    ctx.warmup()
    outage = HOUR * float(ctx.rig.overrides["RETRY_TIME_SCALE"])
    ctx.result.notes.append(f"UFSE refused connections for {outage:.1f}s = 1 h x RETRY_TIME_SCALE")
    ctx.rig.sink_down()
    time.sleep(outage)
    ctx.rig.sink_up()
    ctx.t_back = time.monotonic()
    return ctx.t_back
