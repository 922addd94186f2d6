"""What a deletion's ClickHouse mutations cost ingest: the insert rate before and during one.

``python -m devtools.deletion_cost [--rows 1000000] [--seconds 10] [--url clickhouse://...]`` starts
a private ClickHouse 18.16 server (or uses ``--url``), fills ``events`` (and, through its view,
``event_ids``) with ``--rows`` events of 10 per session and 10 sessions per person, then stores
100-event batches the ingest way (``persist_batches``: dedup read, INSERT) for ``--seconds`` and
reports the rate; then issues the deletion job's mutations for one person (the same WHERE as
app/deletion/job.py, on the four tables) and stores batches the same way until the mutations are
done (at least ``--seconds``), reporting the rate during them and how long they took, then the
rate again without a mutation (the machine's noise) (docs/OPERATIONS.md#deleting-a-persons-data has the figures).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path

from app.deletion import job
from app.events.persist import persist_batches
from app.storage.clickhouse import client, migrations
from app.storage.clickhouse.queries import EVENT_COLUMNS
from devtools import servers

DAY = 86_400_000


def _batch(now: int) -> dict:
    sid = f"live-{uuid.uuid4().hex[:8]}"
    events = [{"event_id": str(uuid.uuid4()), "type": "click", "ts_ms": now - i, "session_id": sid,
               "url": "https://shop.test/", "name": "", "anonymous_id": "someone", "metadata": json.dumps({"i": i})}
              for i in range(100)]
    return {"batch_id": uuid.uuid4().hex, "project": "p", "request_id": "r", "received_at": now, "events": events}


def insert_rate(ch: client.ClickHouse, seconds: float, until_done: bool = False) -> tuple[float, float, float]:
    """(events per second, seconds spent, seconds until the mutations were seen done) storing
    100-event batches for ``seconds`` (and, with ``until_done``, until no mutation of the database runs)."""
    t0, n, done_at = time.monotonic(), 0, -1.0
    while True:
        persist_batches(ch, [_batch(int(time.time() * 1000))])
        n += 100
        spent = time.monotonic() - t0
        if until_done and done_at < 0 and not running(ch):
            done_at = spent
        if spent >= seconds and (not until_done or done_at >= 0):
            return n / spent, spent, done_at


def running(ch: client.ClickHouse) -> int:
    """Unfinished mutations in the database."""
    return int(ch.execute("SELECT count() FROM system.mutations WHERE database = %(d)s AND is_done = 0",
                          {"d": ch.database})[0][0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--url", default="", help="a ClickHouse URL (its database is dropped and made again)")
    args = ap.parse_args()
    svc = None
    if args.url:
        ch = client.get_clickhouse(args.url, timeout=600)
    else:
        servers.ensure_clickhouse_server()
        svc = servers.start_clickhouse_server(Path(tempfile.mkdtemp(prefix="deletion-cost-")) / "server")
        ch = client.get_clickhouse(svc.url.rsplit("/", 1)[0] + "/obs_delete", timeout=600)
    try:
        db = ch.database
        ch.execute(f"DROP DATABASE IF EXISTS {db}")
        migrations.migrate(ch)
        now, step = int(time.time() * 1000), 200_000
        for k in range(0, args.rows, step):
            ch.insert("events", EVENT_COLUMNS,
                      [("p", f"s{i // 10}", str(uuid.UUID(int=i + 1)), "click", now - (i % 30) * DAY, now, "https://x/",
                        "", f"a{i // 100}", "{}", "r", f"b{i // 100}") for i in range(k, min(k + step, args.rows))])
        parts = ch.execute("SELECT count(), sum(bytes_on_disk) FROM system.parts WHERE database = %(d)s "
                           "AND table = 'events' AND active", {"d": db})[0]
        print(f"events: {args.rows:,} rows in {parts[0]} parts, {int(parts[1]) / 1e6:.1f} MB")
        base, _, _ = insert_rate(ch, args.seconds)
        print(f"insert rate, no mutation: {base:,.0f} events/s")
        person = {"project": "p", "subject_kind": "anonymous_id", "subject": "a7"}
        sessions = {f"s{i}": 0 for i in range(70, 80)}
        for table in job.TABLES:
            where, params = job._condition(table, person, sessions, 0)
            ch.execute(f"ALTER TABLE {db}.{table} DELETE WHERE {where}", params)  # noqa: S608 -- the job's own WHERE
        during, spent, done_at = insert_rate(ch, args.seconds, until_done=True)
        left = int(ch.execute(f"SELECT count() FROM {db}.events WHERE anonymous_id = 'a7'")[0][0])  # noqa: S608
        print(f"insert rate during the deletion's mutations: {during:,.0f} events/s ({during / base:.0%} of the "
              f"rate without), over {spent:.1f} s; the mutations were done {done_at:.1f} s after they were issued; "
              f"rows of the person left: {left}")
        after, _, _ = insert_rate(ch, args.seconds)
        print(f"insert rate after, no mutation: {after:,.0f} events/s")
    finally:
        ch.execute(f"DROP DATABASE IF EXISTS {ch.database}")
        client.close_all()
        if svc is not None:
            svc.stop()


if __name__ == "__main__":
    main()
