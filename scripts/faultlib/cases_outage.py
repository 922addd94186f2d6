"""Cases 5-10: a dependency frozen, down, full or gone for a (compressed) hour."""
from __future__ import annotations

import time

from faultlib import reconcile

HOUR = 3600.0


def broker_sigstop(ctx) -> float:
    """5. broker SIGSTOP for 10 s: 503 with Retry-After, no 202 for what was not enqueued."""
    ctx.warmup()
    ctx.extra["frozen_at"] = time.monotonic()
    ctx.rig.broker.proc.sigstop()
    time.sleep(10)
    ctx.rig.broker.proc.sigcont()
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
    """7. the broker at its memory limit during a ClickHouse outage: 503 within seconds, nothing
    evicted or dropped, nothing lost. Redis: maxmemory with noeviction refuses writes; RabbitMQ:
    its memory alarm blocks publishing connections (connection.blocked), it refuses nothing."""
    broker = ctx.rig.broker
    ctx.result.notes.append(broker.limit_memory(ctx.scale.maxmemory_headroom))
    ctx.warmup()
    ch = ctx.rig.servers.ch
    ch.stop()
    before = ctx.statuses()
    full_at = deadline = time.monotonic() + 120
    while time.monotonic() < deadline and ctx.delta(before, ctx.statuses()).get(503, 0) == 0:
        time.sleep(0.5)
    full_at = min(full_at, time.monotonic())
    time.sleep(3)
    during = ctx.delta(before, ctx.statuses())
    ch.restart()
    t = time.monotonic()
    ctx.result.check("503 once the broker was full", during.get(503, 0) > 0, str(during))
    refused = [(t1 - t0) for t0, t1, st in ctx.load.stats.requests if st == 503 and t0 >= full_at - 1]
    slowest = max(refused, default=0.0)
    ctx.result.check("each 503 at the limit answered within 5 s", slowest <= 5.0,
                     f"{len(refused)} answered 503, slowest {slowest:.2f}s")
    ctx.result.check("every 503 carried Retry-After", ctx.load.stats.retry_after_missing[503] == 0,
                     f"{ctx.load.stats.retry_after_missing[503]} without")
    broker.limit_checks(ctx.result)
    return t


def limit_cleared(ctx) -> None:
    """After 7: once the backlog drained, the broker takes publishes again by itself."""
    broker, t0 = ctx.rig.broker, time.monotonic()
    while time.monotonic() - t0 < 120 and not broker.below_limit():
        time.sleep(1)
    ok = broker.below_limit()
    ctx.result.check("the broker left its memory limit after the drain", ok,
                     f"{time.monotonic() - t0:.1f}s after reconciliation" if ok else "still at the limit after 120 s")


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
