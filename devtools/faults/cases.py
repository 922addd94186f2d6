"""The numbered fault cases: each a fault run under load (returning when the fault ended) and
the checks made after reconciliation. tests/faults/test_cases.py runs them."""
from __future__ import annotations

import collections
import contextlib
import json
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil
import redis

from devtools.load import event
from devtools.wait import until

HOUR = 3600.0
POISON_NAME = "fault-poison-pill"


@dataclass
class Ctx:
    """What a case gets: the rig, the running load, the scale and its result to fill."""

    rig: object
    scale: object
    res: object
    load: object = None
    excluded: set = field(default_factory=set)  # acked ids that must NOT be stored (poison)
    extra: dict = field(default_factory=dict)

    def warmup(self) -> None:
        """Load without a fault first, so the workers hold buffered work when it strikes."""
        time.sleep(self.scale.warmup)

    def statuses(self) -> dict:
        return dict(self.load.stats.statuses)

    def since(self, before: dict) -> dict:
        """Client answers counted since ``before`` (a ``statuses()`` copy)."""
        now = self.statuses()
        return {k: now[k] - before.get(k, 0) for k in now if now[k] != before.get(k, 0)}

    def outage(self) -> float:
        """'An hour', compressed by the case's RETRY_TIME_SCALE."""
        return HOUR * float(self.rig.overrides["RETRY_TIME_SCALE"])


def restart_all(procs) -> None:
    """Start the given Procs again together, then wait for each to be ready."""
    for p in procs:
        p.restart(wait=False)
    for p in procs:
        p.wait_ready()


# ---------------------------------------------------------------- processes killed, frozen, stopped

def broker_kill_restart(c: Ctx) -> float:
    c.warmup()
    broker = c.rig.broker
    c.extra["held_at_kill"] = held = broker.held()
    lag = " (RabbitMQ's queue stats, up to 5 s old)" if broker.kind == "amqp" else ""
    c.res.notes.append(f"messages unacked (held by workers) at the kill: {held}{lag}")
    broker.proc.kill9()
    time.sleep(2)
    broker.proc.restart()
    return time.monotonic()


def broker_graceful_restart(c: Ctx) -> float:
    c.warmup()
    broker = c.rig.broker
    before = broker.held()
    t0 = time.monotonic()
    broker.proc.stop()
    stopped = time.monotonic() - t0
    broker.proc.restart()
    # Workers keep taking messages while the stop runs: what was in flight when it took effect
    # is what the restarted broker's own record holds (Redis: its unacked hash, from the AOF).
    c.extra["held_at_kill"] = max(before, broker.held())
    c.res.notes.append(f"{broker.what} graceful stop took {stopped:.1f}s, the start "
                       f"{broker.proc.startup_seconds:.1f}s; {before} messages were unacked before the stop, "
                       f"{c.extra['held_at_kill']} when it took effect")
    c.res.check("graceful stop within 60 s", stopped <= 60, f"{stopped:.1f}s")
    return time.monotonic()


def broker_drained(c: Ctx) -> None:
    # Redis: messages whose ack died with the old connection come back after the visibility
    # timeout (60 s) plus kombu's restore scan (6 s): wait that long, not less. RabbitMQ gives
    # them back when the connection closes.
    ok = until(c.rig.broker.drained, "broker drained", timeout=90, interval=1.0, raises=False) is not None
    try:
        depths = str(c.rig.broker.depths())
    except Exception as exc:
        depths = f"error: {exc}"[:120]
    c.res.check("broker drained (events empty, nothing unacked)", ok, depths)


def pool_children(c: Ctx) -> float:
    c.warmup()
    kills, end = 0, time.monotonic() + c.scale.fault_seconds
    while time.monotonic() < end:
        for w in c.rig.workers():
            kids = w.children()
            for pid in kids if w.name == "events" else random.sample(kids, min(1, len(kids))):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    kills += 1
        time.sleep(2)
    c.res.notes.append(f"pool children killed: {kills}")
    c.res.check("pool children were killed", kills > 0, f"{kills} (a threads pool has none)")
    return time.monotonic()


def _in_group(pgid: int) -> int:
    n = 0
    for pid in psutil.pids():
        with contextlib.suppress(OSError):
            n += os.getpgid(pid) == pgid
    return n


def worker_mains(c: Ctx) -> float:
    c.warmup()
    workers = c.rig.workers()
    for w in workers:
        w.kill9()  # the main process only; its pool children are orphaned
    time.sleep(1)
    left = sum(_in_group(w.pid) for w in workers)
    c.res.notes.append(f"pool processes left after the main kill -9 (reaped before restart): {left}")
    t = time.monotonic()
    restart_all(workers)
    return t


def beat_kill_two(c: Ctx) -> float:
    c.warmup()
    beat = c.rig.stack.procs["beat"]
    beat.kill9()
    time.sleep(3)
    beat.restart()
    second = c.rig.stack.add_beat("beat2").start()
    time.sleep(max(10.0, c.scale.fault_seconds))
    second.stop()
    del c.rig.stack.procs["beat2"]
    return time.monotonic()


def sigterm_web_workers(c: Ctx) -> float:
    c.warmup()
    procs = [c.rig.stack.procs["web"]] + c.rig.workers()
    t0 = time.monotonic()
    for p in procs:
        p.signal(signal.SIGTERM)
    slow = []
    for p in procs:
        try:
            p.proc.wait(60)
        except Exception:
            slow.append(p.name)
    c.res.check("warm shutdown of web and workers within 60 s", not slow,
                f"took {time.monotonic() - t0:.1f}s" + (f"; still running: {slow}" if slow else ""))
    t = time.monotonic()
    restart_all(procs)
    return t


# ---------------------------------------------------------------- a dependency frozen, down, full

def broker_sigstop(c: Ctx) -> float:
    c.warmup()
    c.extra["frozen_at"] = time.monotonic()
    c.rig.broker.proc.sigstop()
    # A probe batch sent 2 s into the freeze: the load's own clients may all be in a request
    # that started just before it (held until the thaw), and then none is sent while frozen.
    probe = threading.Thread(target=lambda: (time.sleep(2), c.load.post(
        [event(f"{c.rig.tag}-frozen", i) for i in range(3)])), daemon=True)
    probe.start()
    time.sleep(10)
    c.rig.broker.proc.sigcont()
    c.extra["thawed_at"] = t = time.monotonic()
    # A call that timed out in the freeze (an ack, the unacked-hash write after a BRPOP) runs
    # when Redis thaws, or not at all if its connection was dropped first: such a message stays
    # unacked until the visibility timeout restores it. Every one of them is in the unacked hash
    # a second after the thaw (a restore comes 60 s after its delivery), so that count bounds
    # the restores this case may show.
    if c.rig.broker.kind == "redis":
        time.sleep(1)
        c.extra["held_at_kill"] = held = c.rig.broker.held()
        c.res.notes.append(f"messages unacked 1 s after the thaw: {held}")
    probe.join(timeout=120)
    return t


def _retry_after_check(c: Ctx) -> None:
    missing = c.load.stats.retry_after_missing[503]
    c.res.check("every 503 carried Retry-After", missing == 0, f"{missing} without")


def frozen_answers(c: Ctx) -> None:
    """After 5 (all requests answered): what requests sent while the broker was frozen got."""
    a, b = c.extra["frozen_at"], c.extra["thawed_at"]
    sent = [(t1 - t0, st) for t0, t1, st in c.load.stats.requests if a <= t0 < b]
    statuses = dict(collections.Counter(st for _, st in sent))
    slowest = max((d for d, _ in sent), default=0.0)
    c.res.notes.append(f"requests sent while the broker was frozen: {len(sent)}, answered {statuses}, "
                       f"slowest {slowest:.1f}s")
    c.res.check("503 answered while the broker was frozen", statuses.get(503, 0) > 0, str(statuses))
    _retry_after_check(c)
    hung = sum(1 for _, st in sent if st == "timeout")
    c.res.check("no request thread left hanging (every request answered within 30 s)", hung == 0,
                f"{hung} timed out; slowest {slowest:.1f}s")


def sessions_redis_down(c: Ctx) -> float:
    c.warmup()
    c.rig.sessions_redis.kill9()
    time.sleep(5)
    c.rig.sessions_redis.restart()
    return time.monotonic()


def maxmemory_ch_down(c: Ctx) -> float:
    """Redis: maxmemory with noeviction refuses writes; RabbitMQ: its memory alarm blocks
    publishing connections (connection.blocked), it refuses nothing. 503 within seconds either way."""
    broker, ch = c.rig.broker, c.rig.servers.ch
    c.res.notes.append(broker.limit_memory(c.scale.maxmemory_headroom))
    c.warmup()
    ch.stop()
    before = c.statuses()
    until(lambda: c.since(before).get(503), "a 503", timeout=120, interval=0.5, raises=False)
    full_at = time.monotonic()
    time.sleep(3)
    during = c.since(before)
    ch.restart()
    t = time.monotonic()
    c.res.check("503 once the broker was full", during.get(503, 0) > 0, str(during))
    refused = [(t1 - t0) for t0, t1, st in c.load.stats.requests if st == 503 and t0 >= full_at - 1]
    slowest = max(refused, default=0.0)
    c.res.check("each 503 at the limit answered within 5 s", slowest <= 5.0,
                f"{len(refused)} answered 503, slowest {slowest:.2f}s")
    _retry_after_check(c)
    broker.limit_checks(c.res)
    return t


def limit_cleared(c: Ctx) -> None:
    """After 7: once the backlog drained, the broker takes publishes again by itself."""
    took = until(c.rig.broker.below_limit, "below the limit", timeout=120, interval=1.0, raises=False)
    c.res.check("the broker left its memory limit after the drain", took is not None,
                "still at the limit after 120 s" if took is None else f"{took:.1f}s after reconciliation")


def ch_down_hour(c: Ctx) -> float:
    c.warmup()
    c.res.notes.append(f"ClickHouse down for {c.outage():.0f}s = 1 h x RETRY_TIME_SCALE")
    c.rig.servers.ch.stop()
    time.sleep(c.outage())
    c.rig.servers.ch.restart()
    return time.monotonic()


def no_dead_letters(c: Ctx) -> None:
    dl = c.rig.dead_letters()
    c.res.check("no dead letters", sum(dl.values()) == 0, str(dict(dl)) or "none")


def pg_down(c: Ctx) -> float:
    """Known keys keep working from the cache."""
    c.warmup()
    before = c.statuses()
    c.rig.servers.pg.stop()
    time.sleep(60)
    during = c.since(before)
    c.rig.servers.pg.restart()
    bad = {k: v for k, v in during.items() if k in (401, 500, 503)}
    c.res.notes.append(f"answers while PostgreSQL was down: {during}")
    c.res.check("202 for the known key throughout the outage", during.get(202, 0) > 0 and not bad, str(during))
    return time.monotonic()


def ufse_down_hour(c: Ctx) -> float:
    c.warmup()
    c.res.notes.append(f"UFSE refused connections for {c.outage():.1f}s = 1 h x RETRY_TIME_SCALE")
    c.rig.sink.stop()
    time.sleep(c.outage())
    c.rig.sink_up()
    c.extra["back_at"] = time.monotonic()
    return c.extra["back_at"]


# ---------------------------------------------------------------- what UFSE refuses, bad data, lost state

def ufse_4xx_then_replay(c: Ctx) -> None:
    """10b. UFSE answering 4xx: dead letter, then `flask --app app dlq replay --all` delivers it."""
    rig, res = c.rig, c.res
    done = c.extra.get("forward_done")
    back = None if done is None else done - c.extra["back_at"]
    res.check("every waiting session delivered within 120 s of UFSE answering again",
              back is not None and back <= 120, "never" if back is None else f"{back:.1f}s")
    res.check("no dead letter from the outage", sum(rig.dead_letters().values()) == 0, str(dict(rig.dead_letters())))
    rig.sink.set_plan([400] * 3)
    ids = set()
    for i in range(3):
        batch = [event(f"{rig.tag}-4xx-{i}", j) for j in range(3)]
        c.load.post(batch)
        ids.update(e["event_id"] for e in batch)
    until(lambda: sum(rig.dead_letters().values()) >= 3, "3 dead letters", timeout=120, interval=0.5, raises=False)
    dl = rig.dead_letters()
    res.check("4xx answers became dead letters", sum(dl.values()) >= 3, str(dict(dl)))
    out = rig.stack.flask("dlq", "replay", "--all", check=False)
    res.notes.append(f"dlq replay --all: {out.stdout.strip()[-200:]} {out.stderr.strip()[-200:]}")
    until(lambda: ids <= rig.forwarded(), "replayed", timeout=120, interval=0.5, raises=False)
    res.check("replay delivered every dead-lettered session", ids <= rig.forwarded(),
              f"{len(ids - rig.forwarded())} events missing")
    res.check("no dead letter pending after the replay", sum(rig.dead_letters().values()) == 0,
              str(dict(rig.dead_letters())))


def poison_setup(c: Ctx) -> None:
    """11 (before the load): a ClickHouse-side rule rejecting one value the API accepts."""
    from clickhouse_driver import Client

    client = Client.from_url(c.rig.ch_url)
    client.execute(f"ALTER TABLE {c.rig.db}.events ADD COLUMN fault_poison UInt8 "
                   f"DEFAULT throwIf(name = '{POISON_NAME}')")
    client.disconnect()


def poison_batch(c: Ctx) -> float:
    c.warmup()
    sid = f"{c.rig.tag}-poison"
    batch = [event(sid, 0, type="custom", name=POISON_NAME), event(sid, 1), event(sid, 2)]
    c.load.post(batch)
    c.excluded = {e["event_id"] for e in batch}
    c.res.notes.append("poison: a `custom` event named fault-poison-pill; the events table got "
                       "`fault_poison UInt8 DEFAULT throwIf(name = 'fault-poison-pill')`")
    return time.monotonic()


def poison_isolated(c: Ctx) -> None:
    """After 11: exactly the poison batch is a dead letter (once its retries ran out); not stored."""
    until(lambda: c.rig.dead_letters().get("poison_batch"), "the poison dead letter", timeout=120,
          interval=0.5, raises=False)
    dl = c.rig.dead_letters()
    c.res.check("exactly one poison_batch dead letter", dl.get("poison_batch", 0) == 1 and sum(dl.values()) == 1,
                str(dict(dl)))
    stored = set()
    with contextlib.suppress(Exception):  # ClickHouse not answering: the reconciliation reports it
        stored = c.rig.stored_ids()
    c.res.check("the poison batch's events are not stored", not (c.excluded & stored))


def over_limit(c: Ctx) -> float:
    """12. an over-limit body (> 2 MiB with Content-Length): a readable 413, not a connection reset."""
    c.warmup()
    for size in (3 * 1024 * 1024, 8 * 1024 * 1024):
        status, detail = _post_raw(c.rig.stack.port, c.rig.key, size)
        c.res.check(f"{size // 1024 // 1024} MiB body answered a readable 413", status == 413, detail)
    return time.monotonic()


def _post_raw(port: int, key: str, size: int) -> tuple[int | None, str]:
    body = (b'{"events":[' + b" " * (size - 14) + b"]}")
    head = (f"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    sent, send_error, data = 0, "", b""
    try:
        s.sendall(head)
        for i in range(0, len(body), 65536):
            s.sendall(body[i:i + 65536])
            sent = i + 65536
    except OSError as exc:
        send_error = f"send stopped after {sent} bytes: {type(exc).__name__}"
    try:
        while b"\r\n\r\n" not in data or len(data) < 4096:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        return None, f"{send_error}; reading the answer: {type(exc).__name__}: {exc}"
    finally:
        s.close()
    if not data:
        return None, f"{send_error}; no answer"
    status = int(data.split(b" ", 2)[1])
    try:
        code = json.loads(data.split(b"\r\n\r\n", 1)[1] or b"{}").get("error", {}).get("code")
    except ValueError:
        code = "(body not JSON or truncated)"
    return status, f"status {status}, error code {code}" + (f"; {send_error}" if send_error else "")


def sessions_flushall(c: Ctx) -> float:
    c.warmup()
    r = redis.Redis.from_url(c.rig.sessions_redis.url)
    c.res.notes.append(f"sessions Redis keys at the FLUSHALL: {r.dbsize()}")
    r.flushall()
    return time.monotonic()


def no_conflicting_versions(c: Ctx) -> None:
    from devtools.faults.rig import repeats

    extra, differing = repeats(c.rig.deliveries())
    c.res.check("no webhook-id delivered twice with different content", differing == 0,
                f"{differing} ids with differing content, {extra} repeated deliveries")


def _write_refusal(r) -> str:
    """The sessions Redis's answer to one small write: "" when it took it, else the reply's code."""
    try:
        r.set("faults:probe", "1", ex=60)  # every non-broker key expires
        return ""
    except redis.ResponseError as exc:
        from app.storage.redis_clients import reply_code

        oom = isinstance(exc, redis.exceptions.OutOfMemoryError)  # redis-py strips that reply's code
        return "OOM" if oom else reply_code(exc) or type(exc).__name__


def sessions_redis_refusing(c: Ctx) -> float:
    """15. The sessions Redis refuses writes: first at ``maxmemory`` (noeviction: OOM replies),
    then with ``min-replicas-to-write 1`` and its one replica stopped (NOREPLICAS replies). Both
    are transient refusals (app/storage/redis_clients.is_transient): the session step retries
    and nothing is acked away; the replies are real, from a real redis-server."""
    from devtools.servers.redis import start_redis

    primary = c.rig.sessions_redis
    r = redis.Redis.from_url(primary.url, socket_timeout=2)
    replica = start_redis(c.rig.dir / "sessions-replica", appendonly=False, name="sessions-replica")
    try:
        rr = redis.Redis.from_url(replica.url, socket_timeout=2)
        rr.replicaof("127.0.0.1", int(primary.port))
        until(lambda: rr.info("replication").get("master_link_status") == "up", "replica in sync",
              timeout=30, interval=0.2)
        c.warmup()
        used = int(r.info("memory")["used_memory"])
        r.config_set("maxmemory", str(used // 2))  # below what it holds: every write is refused
        oom = _write_refusal(r)
        c.res.check("the sessions Redis answered OOM at maxmemory", oom == "OOM",
                    f"maxmemory {used // 2 // 1024} KiB with {used // 1024} KiB used; a write got {oom or 'OK'}")
        time.sleep(c.scale.fault_seconds)
        r.config_set("maxmemory", "0")
        r.config_set("min-replicas-to-write", "1")  # min-replicas-max-lag stays at its default (10 s)
        replica.stop()
        lost = until(lambda: _write_refusal(r) == "NOREPLICAS", "NOREPLICAS", timeout=30, interval=0.2,
                     raises=False)
        c.res.check("the sessions Redis answered NOREPLICAS once its replica was gone", lost is not None,
                    "never" if lost is None else f"{lost:.1f}s after the replica stopped")
        time.sleep(c.scale.fault_seconds)
    finally:
        r.config_set("maxmemory", "0")
        r.config_set("min-replicas-to-write", "0")
        replica.stop()
    refusals = collections.Counter()
    for p in c.rig.workers():
        text = p.log_text()
        refusals.update({code: text.count(code) for code in ("OOM command not allowed", "NOREPLICAS")})
    c.res.notes.append(f"{c.scale.fault_seconds:.0f}s of OOM then {c.scale.fault_seconds:.0f}s of NOREPLICAS; "
                       f"worker log lines naming them: {dict(refusals)}")
    return time.monotonic()


# ---------------------------------------------------------------- the registry

@dataclass
class Case:
    n: int
    title: str
    fault: Callable
    after: tuple = ()
    setup: Callable | None = None
    sessions_redis: bool = False
    maxmemory: str | None = None
    hour: bool = False  # compresses an hour with RETRY_TIME_SCALE
    chdb: bool = False  # also run on chDB in the full suite
    chdb_na: str = ""  # why a chDB run of this case has nothing to act on
    dead_holder: bool = False  # kills a worker's main process: its messages come back by restore
    # kills or freezes the broker: messages in flight then were on connections that died or
    # timed out, their acks with them, so up to that many restores are the recovery, not a long wait
    dead_connection: bool = False
    amqp_title: str = ""  # the title when the broker is RabbitMQ (cases that act on the broker)

    def title_for(self, broker: str) -> str:
        return self.amqp_title if broker == "amqp" and self.amqp_title else self.title

    def overrides(self, scale) -> dict:
        """The only settings changed: the idle timeout, and the retry time scale for 'an hour'."""
        return {"SESSION_IDLE_TIMEOUT": scale.idle_timeout, **({"RETRY_TIME_SCALE": scale.hour_scale}
                                                               if self.hour else {})}


CASES = {c.n: c for c in [
    Case(0, "broker Redis kill -9, restart from its AOF (appendfsync always), events worker holding work",
         broker_kill_restart, after=(broker_drained,), dead_connection=True,
         amqp_title="RabbitMQ kill -9, restart on its data (quorum queues), events worker holding work"),
    Case(1, "kill -9 of pool children every 2 s, flushes included", pool_children, chdb=True,
         chdb_na="the chDB owner runs a threads pool: it has no pool children to kill"),
    Case(2, "kill -9 of each worker's main process, then a restart", worker_mains, chdb=True, dead_holder=True),
    Case(3, "kill -9 of beat and a restart; then two beats at once", beat_kill_two),
    Case(4, "SIGTERM of web and workers under load, then a restart", sigterm_web_workers),
    Case(5, "broker Redis SIGSTOP for 10 s", broker_sigstop, after=(frozen_answers,), chdb=True, dead_connection=True,
         amqp_title="RabbitMQ SIGSTOP for 10 s"),
    Case(6, "separate sessions Redis (SESSIONS_REDIS_URL) kill -9, down 5 s, restart", sessions_redis_down,
         sessions_redis=True),
    Case(7, "broker Redis at maxmemory (noeviction) during a ClickHouse outage", maxmemory_ch_down,
         maxmemory="1gb", after=(limit_cleared,),
         amqp_title="RabbitMQ at its memory high watermark (publishers blocked) during a ClickHouse outage"),
    Case(8, "ClickHouse stopped for an hour (compressed)", ch_down_hour, after=(no_dead_letters,), hour=True,
         chdb=True, chdb_na="chDB runs inside the owner worker: there is no ClickHouse server to stop"),
    Case(9, "PostgreSQL stopped for 60 s under load", pg_down),
    Case(10, "UFSE down for an hour (compressed), then back; then UFSE answering 400, dlq replay",
         ufse_down_hour, after=(ufse_4xx_then_replay,), hour=True),
    Case(11, "a poison batch among good ones (dead letter after EVENTS_RETRY_SCHEDULE, ~1.4 h, compressed)",
         poison_batch, setup=poison_setup, after=(poison_isolated,), hour=True),
    Case(12, "over-limit bodies (3 and 8 MiB with Content-Length)", over_limit),
    Case(13, "sessions Redis FLUSHALL mid-run (exactly once)", sessions_flushall,
         sessions_redis=True, after=(no_conflicting_versions,)),
    Case(14, "broker Redis restarted (graceful stop + start) under load", broker_graceful_restart,
         after=(broker_drained,), dead_connection=True,
         amqp_title="RabbitMQ restarted (graceful stop + start) under load"),
    Case(15, "sessions Redis (own server) refusing writes: at maxmemory (OOM), then its replica gone "
             "(NOREPLICAS, min-replicas-to-write 1)", sessions_redis_refusing, sessions_redis=True,
         after=(no_dead_letters,)),
]}
CI_REDIS, CI_AMQP = (0, 1, 2, 5, 10, 11), (14,)  # what `make test` runs, at the CI scale
