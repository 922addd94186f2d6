"""Run one case: rig up, load, fault, reconcile, figures; everything stopped afterwards."""
from __future__ import annotations

import sys
import time
import traceback

from faultlib import reconcile
from faultlib.brokers import QUEUES
from faultlib.ctx import Ctx
from faultlib.load import Load, Scale
from faultlib.report import RECOVERY_BOUND, Result
from faultlib.rig import Rig, Servers
from toolkit.rabbitmq_server import rabbitmq_installed

FULL = Scale()
CI = Scale(clients=3, batch=5, batches_per_session=3, interval=0.15, warmup=3.0, tail=2.0, give_up=60.0,
           fault_seconds=6.0, maxmemory_headroom=3 * 1024 * 1024, idle_timeout=3, hour_scale=0.001, name="ci")
WHY = {"SESSION_IDLE_TIMEOUT": "sessions finalize within the run instead of after 30 min",
       "RETRY_TIME_SCALE": "compresses 'an hour' of outage and the retry schedule by this factor"}


def say(msg: str) -> None:
    print(f"[faults {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_case(servers: Servers, case, scale: Scale, chdb: bool = False, broker: str = "redis") -> Result:
    """Run ``case`` at the default settings (but its named overrides) and return its figures."""
    res = Result(case=str(case.n), title=case.title_for(broker), engine="chdb" if chdb else "server",
                 broker=broker)
    if chdb and case.chdb_na:
        res.na = f"on chDB {case.chdb_na}"
        return res
    if broker == "amqp" and not rabbitmq_installed():
        res.error = "rabbitmq-server is not installed (apt-get install -y rabbitmq-server)"
        return res
    t0 = time.monotonic()
    rig = Rig(servers, case.n, case.overrides(scale), chdb=chdb, sessions_redis=case.sessions_redis,
              maxmemory=case.maxmemory, broker=broker)
    res.overrides = rig.override_text()
    res.notes += [f"override {k}: {WHY[k]}" for k in rig.overrides]
    try:
        say(f"case {case.n} ({res.engine}, {broker}): starting the stack ({rig.dir})")
        rig.start()
        ctx = Ctx(rig, None, scale, res)
        if case.setup:
            case.setup(ctx)
        ctx.load = Load(rig.stack.url, rig.key, scale, prefix=rig.tag).start()
        say(f"case {case.n}: load running, fault: {res.title}")
        fault_end = case.fault(ctx)
        time.sleep(scale.tail)
        ctx.load.stop()
        ctx.load.join()
        stats = ctx.load.stats
        expected = stats.acked - ctx.excluded
        res.sent, res.acked = len(stats.sent), len(stats.acked)
        say(f"case {case.n}: load done ({res.acked}/{res.sent} acknowledged; {dict(stats.statuses)}); reconciling")
        if not chdb:
            res.recovery_s, stored = reconcile.wait_stored(rig, expected, fault_end, RECOVERY_BOUND + 30)
        bound = RECOVERY_BOUND + scale.idle_timeout + 30
        forwarded, done = reconcile.wait_forwarded(rig, expected, bound)
        ctx.extra["forward_done"] = done
        if chdb:  # chDB cannot be read while its owner runs: time until everything was forwarded
            res.recovery_s = None if done is None else done - fault_end
            res.notes.append("recovered s on chDB = until every acknowledged event was forwarded")
        for check in case.after:
            check(ctx)
        forwarded = reconcile.forwarded_ids(rig.deliveries())
        res.forwarded = len(expected & forwarded)
        res.missing_ufse = len(expected - forwarded)
        res.repeated, differing = reconcile.repeats(rig.deliveries())
        res.restores = rig.broker.live_restores(rig)
        if broker == "amqp":
            _amqp_checks(rig, res)
        elif case.dead_holder:
            res.notes.append("restores here are the killed workers' messages (expected, after the visibility timeout)")
        elif case.dead_connection:
            held = int(ctx.extra.get("held_at_kill", 0))
            res.check("restores only of messages in flight on the connections the broker kill or stop cut",
                      res.restores <= held, f"{res.restores} restored, {held} were in flight at the kill")
        else:
            res.check("no message a live worker held was restored by the broker", res.restores == 0,
                      f"{res.restores} restored")
        res.notes.append(f"client answers: {dict(stats.statuses)}; gave up on {stats.gave_up} batches")
        if ctx.excluded:
            res.notes.append(f"{len(ctx.excluded)} acknowledged poison events are expected in the dead letter, "
                             "not stored")
        if chdb:
            rig.stack.stop()
            stored = reconcile.chdb_stored_ids(rig)
        res.stored = len(expected & stored)
        res.missing_ch = len(expected - stored)
        if res.missing_ch or res.missing_ufse:
            res.notes.append(_diagnose(rig))
            lost = sorted((expected - stored) | (expected - forwarded))
            where = {stats.batches[b][0] for b in stats.batches if set(stats.batches[b][1]) & set(lost)}
            res.notes.append(f"missing events (first 3): {lost[:3]}; their sessions: {sorted(where)[:5]}")
    except Exception as exc:  # a case that crashes is a FAIL with its reason, the suite goes on
        res.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        say(f"case {case.n} crashed:\n{traceback.format_exc()}")
    finally:
        res.seconds = time.monotonic() - t0
        try:
            rig.stop()
        except Exception as exc:
            res.notes.append(f"stopping the rig: {exc}")
        say(f"case {case.n}: {'PASS' if res.ok else 'FAIL'} in {res.seconds:.0f}s (logs {rig.dir / 'logs'})")
    return res


def _amqp_checks(rig, res: Result) -> None:
    """RabbitMQ: no consumer_timeout took a live worker's message; durable quorum queues;
    every publish in confirm mode; no ingest journal (RabbitMQ acks for real)."""
    res.check("no message a live worker held was taken back (consumer_timeout)", res.restores == 0,
              f"{res.restores} consumer ack timeouts in the node's log")
    facts = rig.broker.queue_facts()
    ours = {q: facts.get(q) for q in QUEUES}
    res.check("durable quorum queues", all(f and f[0] == "quorum" and f[1] for f in ours.values()),
              ", ".join(f"{q}: {f[0]}, durable={f[1]}" if f else f"{q}: missing" for q, f in ours.items()))
    delayed = [q for q, f in facts.items() if q.startswith("celery_delayed_") and f[0] == "quorum"]
    res.notes.append(f"Celery's native delayed delivery (countdowns): {len(delayed)} celery_delayed_* quorum queues")
    c = rig.broker.proc.counters()
    res.check("every publish on a channel in confirm mode (publisher confirms)",
              c["published"] > 0 and c["published_in_confirm_mode"] == c["published"],
              f"{c['published_in_confirm_mode']} of {c['published']} publishes since the node's last start; "
              f"{c['confirmed']} confirmed")
    res.notes.append(f"RabbitMQ redelivered {c['redelivered']} messages since its last start (a closed "
                     "connection's unacked messages, requeues by the events worker's outage verdicts)")
    journal = list(rig.redis_client().scan_iter(match="*journal*", count=1000))
    res.check("no ingest journal (RabbitMQ acks for real)", not journal, f"{len(journal)} journal keys in Redis")


def _diagnose(rig) -> str:
    """Where the missing events may sit: broker queue lengths and the last worker errors."""
    try:
        queues = rig.broker.depths()
    except Exception as exc:
        queues = {"error": str(exc)}
    errors = []
    for p in rig.workers():
        errors += [f"{p.name}: {line.split(' | ', 1)[-1][:240]}" for line in p.log_text().splitlines()
                   if '"level": "error"' in line or "Traceback" in line][-2:]
    return f"broker at the end: {queues}; last worker errors: {errors[-4:] or 'none'}"


def run_plan(servers: Servers, plan: list, scale: Scale, background=None) -> list[Result]:
    """Run ``[(case, chdb, broker), ...]`` in order; entries for which ``background(case, broker)``
    holds run one after another in one extra thread, alongside the others (case 2 mostly waits
    out the 60 s visibility timeout)."""
    import concurrent.futures as cf

    results: dict[int, Result] = {}
    with cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="bg-case") as pool:
        futures = {i: pool.submit(run_case, servers, c, scale, chdb, broker)
                   for i, (c, chdb, broker) in enumerate(plan)
                   if background is not None and background(c, broker) and not chdb}
        for i, (c, chdb, broker) in enumerate(plan):
            if i not in futures:
                results[i] = run_case(servers, c, scale, chdb, broker)
        for i, f in futures.items():
            results[i] = f.result()
    return [results[i] for i in sorted(results)]
