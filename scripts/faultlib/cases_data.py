"""Cases 10 (4xx part), 11-13: what UFSE refuses, a poison batch, an over-limit body, lost session state."""
from __future__ import annotations

import json
import socket
import time

import redis

from faultlib import reconcile
from faultlib.load import event

POISON_NAME = "fault-poison-pill"


def ufse_4xx_then_replay(ctx) -> None:
    """10b. UFSE answering 4xx: dead letter, then `flask --app app dlq replay --all` delivers it."""
    rig, res = ctx.rig, ctx.result
    done = ctx.extra.get("forward_done")
    back = None if done is None or ctx.t_back is None else done - ctx.t_back
    res.check("every waiting session delivered within 120 s of UFSE answering again",
              back is not None and back <= 120, "never" if back is None else f"{back:.1f}s")
    undeliverable = reconcile.dead_letters(rig)
    res.check("no dead letter from the outage", sum(undeliverable.values()) == 0, str(dict(undeliverable)))
    rig.sink.set_plan([400] * 3)
    ids = set()
    for i in range(3):
        batch = [event(f"{rig.tag}-4xx-{i}", j) for j in range(3)]
        ctx.load.post(_session(), batch)
        ids.update(e["event_id"] for e in batch)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and sum(reconcile.dead_letters(rig).values()) < 3:
        time.sleep(0.5)
    dl = reconcile.dead_letters(rig)
    res.check("4xx answers became dead letters", sum(dl.values()) >= 3, str(dict(dl)))
    out = rig.stack.flask("dlq", "replay", "--all", check=False)
    res.notes.append(f"dlq replay --all: {out.stdout.strip()[-200:]} {out.stderr.strip()[-200:]}")
    got = reconcile.wait_forwarded(rig, ids, 120)[0]
    res.check("replay delivered every dead-lettered session", ids <= got, f"{len(ids - got)} events missing")
    res.check("no dead letter pending after the replay", sum(reconcile.dead_letters(rig).values()) == 0,
              str(dict(reconcile.dead_letters(rig))))


def _session():
    import requests

    return requests.Session()


def poison_setup(ctx) -> None:
    """11 (before the load): a ClickHouse-side rule rejecting one value the API accepts."""
    from clickhouse_driver import Client

    client = Client.from_url(ctx.rig.ch_url)
    client.execute(f"ALTER TABLE {ctx.rig.ch_db}.events ADD COLUMN fault_poison UInt8 "
                   f"DEFAULT throwIf(name = '{POISON_NAME}')")
    client.disconnect()


def poison_batch(ctx) -> float:
    """11. a poison batch among good ones: one batch fails deterministically at INSERT time."""
    ctx.warmup()
    sid = f"{ctx.rig.tag}-poison"
    batch = [event(sid, 0, type="custom", name=POISON_NAME), event(sid, 1), event(sid, 2)]
    ctx.load.post(_session(), batch)
    ctx.excluded = {e["event_id"] for e in batch}
    ctx.result.notes.append("poison: a `custom` event named fault-poison-pill; the events table got "
                            "`fault_poison UInt8 DEFAULT throwIf(name = 'fault-poison-pill')`")
    return time.monotonic()


def poison_isolated(ctx) -> None:
    """After 11: exactly the poison batch is a dead letter (once its retries ran out); not stored."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not reconcile.dead_letters(ctx.rig).get("poison_batch"):
        time.sleep(0.5)
    dl = reconcile.dead_letters(ctx.rig)
    ctx.result.check("exactly one poison_batch dead letter", dl.get("poison_batch", 0) == 1 and sum(dl.values()) == 1,
                     str(dict(dl)))
    stored = reconcile.stored_ids(ctx.rig) or set()
    ctx.result.check("the poison batch's events are not stored", not (ctx.excluded & stored))


def over_limit(ctx) -> float:
    """12. an over-limit body (> 2 MiB with Content-Length): a readable 413, not a connection reset."""
    ctx.warmup()
    for size in (3 * 1024 * 1024, 8 * 1024 * 1024):
        status, detail = _post_raw(ctx.rig.stack.port, ctx.rig.key, size)
        ctx.result.check(f"{size // 1024 // 1024} MiB body answered a readable 413", status == 413, detail)
    return time.monotonic()


def _post_raw(port: int, key: str, size: int) -> tuple[int | None, str]:
    body = (b'{"events":[' + b" " * (size - 14) + b"]}")
    head = (f"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    sent, send_error = 0, ""
    try:
        s.sendall(head)
        for i in range(0, len(body), 65536):
            s.sendall(body[i:i + 65536])
            sent = i + 65536
    except OSError as exc:
        send_error = f"send stopped after {sent} bytes: {type(exc).__name__}"
    try:
        data = b""
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


def sessions_flushall(ctx) -> float:
    """13. the sessions Redis loses its data mid-run (FLUSHALL)."""
    ctx.warmup()
    r = redis.Redis.from_url(ctx.rig.sessions_redis.url)
    ctx.result.notes.append(f"sessions Redis keys at the FLUSHALL: {r.dbsize()}")
    r.flushall()
    return time.monotonic()


def no_conflicting_versions(ctx) -> None:
    """After 13: no webhook-id delivered twice with different content."""
    extra, differing = reconcile.repeats(ctx.rig.deliveries())
    ctx.result.check("no webhook-id delivered twice with different content", differing == 0,
                     f"{differing} ids with differing content, {extra} repeated deliveries")
