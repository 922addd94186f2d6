"""What ClickHouse work costs, measured on a private server: ``python -m devtools.cost <what>``.

Each measurement starts a private ClickHouse 18.16 server (or opens a temporary chDB directory,
or uses ``--url``), fills it, times the work and prints the figures docs/OPERATIONS.md quotes:

- ``migration [--rows 2000000] [--engine server|chdb]``: ClickHouse migration 2 (session tables
  to their time partitioning). ``session_batches`` and ``sessions`` are built without
  partitioning (the DDL of installs made before 7a6366f), filled with ``--rows`` rows each over
  90 days, and ``migrations.repartition`` is timed per table (#migrations).
- ``deletion [--rows 1000000] [--seconds 10] [--url clickhouse://...]``: what a deletion's
  mutations cost ingest. ``events`` (and, through its view, ``event_ids``) gets ``--rows`` events
  of 10 per session and 10 sessions per person; 100-event batches are stored the ingest way
  (``persist_batches``: dedup read, INSERT) for ``--seconds``, then while the deletion job's
  mutations for one person run (the WHERE of app/deletion/job.py, on the four tables; at least
  ``--seconds``), then again without a mutation (the machine's noise) (#deleting-a-persons-data).
- ``retention [--events 1000000] [--move]``: disk cost of events per million, and a retention run
  over them (#retention). ``--events`` SDK-like events (page views, clicks, errors with stacks,
  network calls, web vitals; 25 events a session, 40 sessions a batch, over 30 days, 20 projects of
  which 5 have a 7-day override) through the pipeline's own INSERT, the bytes on disk of each
  table's active parts once the merges settle, then a retention run as of the next day.
  ``--move``: instead, time migration 3 (``migrations.move_events``) on that many legacy rows.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import random
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from app.storage.clickhouse import client, migrations, queries
from devtools import servers

DAY = 86_400_000
BATCH_COLUMNS = ("project", "session_id", "version", "batch_id", "events", "created_ms")
_TYPES = ("page_view", "click", "click", "click", "network", "network", "error", "web_vital", "navigation", "custom")


@contextlib.contextmanager
def clickhouse(db: str, *, url: str = "", chdb: bool = False) -> Iterator[client.ClickHouse]:
    """A client of database ``db`` on a private 18.16 server started here (or of ``url``, or of a
    temporary chDB directory); the server stopped and its data removed after."""
    with tempfile.TemporaryDirectory(prefix=f"observer-cost-{db}-", ignore_cleanup_errors=True) as tmp:
        svc = None
        if url:
            ch = client.get_clickhouse(url, timeout=600)
        elif chdb:
            ch = client.get_clickhouse(f"chdb://{tmp}/chdb")
        else:
            servers.ensure_clickhouse_server()
            svc = servers.start_clickhouse_server(Path(tmp) / "server")
            ch = client.get_clickhouse(svc.url.rsplit("/", 1)[0] + f"/{db}", timeout=600)
        try:
            yield ch
        finally:
            client.close_all()
            if svc is not None:
                svc.stop()


def parts(ch: client.ClickHouse) -> dict[str, tuple[int, int, int, int, int]]:
    """{table: (rows, bytes on disk, uncompressed bytes, active parts, partitions)} of the database."""
    rows = ch.execute("SELECT table, sum(rows), sum(bytes_on_disk), sum(data_uncompressed_bytes), count(), "
                      "uniqExact(partition) FROM system.parts WHERE database = %(d)s AND active GROUP BY table",
                      {"d": ch.database})
    return {r[0]: tuple(int(v) for v in r[1:]) for r in rows}


def timed(fn, *args) -> tuple:
    """(what ``fn(*args)`` returned, seconds it took)."""
    t0 = time.monotonic()
    return fn(*args), time.monotonic() - t0


# ---------------------------------------------------------------- migration 2: repartition

def unpartitioned_ddl(db: str, f: migrations.Features, cluster: str = "") -> list[str]:
    """The schema of an install made before 7a6366f: ``session_batches`` and ``sessions`` without PARTITION BY
    (and ``events`` by month, as before migration 3)."""
    return [s.replace(f"PARTITION BY {migrations.SESSION_BATCHES_PARTITION}\n", "")
             .replace(f"PARTITION BY {migrations.SESSIONS_PARTITION}\n", "")
            for s in migrations.ddl(db, f, cluster=cluster, legacy=True)]


def migration(ch: client.ClickHouse, rows: int) -> None:
    for statement in unpartitioned_ddl(ch.database, migrations.detect(ch)):
        ch.execute(statement)
    now, step = int(time.time() * 1000), 200_000
    for k in range(0, rows, step):
        ids = range(k, min(k + step, rows))
        ch.insert("session_batches", BATCH_COLUMNS, [("p", f"s{i}", 1, f"b{i}", 3, now - (i % 90) * DAY) for i in ids])
        ch.insert("sessions", queries.SESSION_COLUMNS,
                  [("p", f"s{i}", 1, now, now + 2, 2, 3, '{"click": 3}', "idle", now, now - (i % 90) * DAY,
                    f"p:s{i}:1", "delivered") for i in ids])
    for table in ("session_batches", "sessions"):
        ch.execute(f"OPTIMIZE TABLE {ch.database}.{table}")
        n, size = parts(ch)[table][:2]
        print(f"{table}: {n} rows, {size / 1e6:.1f} MB on disk, unpartitioned")
    for table in ("session_batches", "sessions"):
        copied, took = timed(migrations.repartition, ch, table)
        count = ch.execute(f"SELECT count() FROM {ch.database}.{table}")[0][0]  # noqa: S608 -- fixed identifiers
        print(f"repartition {table}: {copied} rows copied in {took:.1f} s ({copied / took:,.0f} rows/s); "
              f"now {count} rows in {parts(ch)[table][4]} partitions")
    print(f"engine: {ch.execute('SELECT version()')[0][0]}")


# ---------------------------------------------------------------- a deletion's mutations under ingest

def _batch(now: int) -> dict:
    sid = f"live-{uuid.uuid4().hex[:8]}"
    events = [{"event_id": str(uuid.uuid4()), "type": "click", "ts_ms": now - i, "session_id": sid,
               "url": "https://shop.test/", "name": "", "anonymous_id": "someone", "metadata": json.dumps({"i": i})}
              for i in range(100)]
    return {"batch_id": uuid.uuid4().hex, "project": "p", "request_id": "r", "received_at": now, "events": events}


def insert_rate(ch: client.ClickHouse, seconds: float, until_done: bool = False) -> tuple[float, float, float]:
    """(events per second, seconds spent, seconds until the mutations were seen done) storing
    100-event batches for ``seconds`` (and, with ``until_done``, until no mutation of the database runs)."""
    from app.events.persist import persist_batches

    t0, n, done_at = time.monotonic(), 0, -1.0
    while True:
        persist_batches(ch, [_batch(int(time.time() * 1000))])
        n += 100
        spent = time.monotonic() - t0
        if until_done and done_at < 0 and not mutations_running(ch):
            done_at = spent
        if spent >= seconds and (not until_done or done_at >= 0):
            return n / spent, spent, done_at


def mutations_running(ch: client.ClickHouse) -> int:
    """Unfinished mutations in the database."""
    return int(ch.execute("SELECT count() FROM system.mutations WHERE database = %(d)s AND is_done = 0",
                          {"d": ch.database})[0][0])


def deletion(ch: client.ClickHouse, rows: int, seconds: float) -> None:
    from app.deletion import job

    db = ch.database
    ch.execute(f"DROP DATABASE IF EXISTS {db}")
    try:
        migrations.migrate(ch)
        now, step = int(time.time() * 1000), 200_000
        for k in range(0, rows, step):
            ch.insert("events", queries.EVENT_COLUMNS,
                      [("p", f"s{i // 10}", str(uuid.UUID(int=i + 1)), "click", now - (i % 30) * DAY, now, "https://x/",
                        "", f"a{i // 100}", "{}", "r", f"b{i // 100}") for i in range(k, min(k + step, rows))])
        _, size, _, count, _ = parts(ch)["events"]
        print(f"events: {rows:,} rows in {count} parts, {size / 1e6:.1f} MB")
        base, _, _ = insert_rate(ch, seconds)
        print(f"insert rate, no mutation: {base:,.0f} events/s")
        person = {"project": "p", "subject_kind": "anonymous_id", "subject": "a7"}
        sessions = {f"s{i}": 0 for i in range(70, 80)}
        for table in job.TABLES:
            where, params = job._condition(table, person, sessions, 0)
            ch.execute(f"ALTER TABLE {db}.{table} DELETE WHERE {where}", params)  # noqa: S608 -- the job's own WHERE
        during, spent, done_at = insert_rate(ch, seconds, until_done=True)
        left = int(ch.execute(f"SELECT count() FROM {db}.events WHERE anonymous_id = 'a7'")[0][0])  # noqa: S608
        print(f"insert rate during the deletion's mutations: {during:,.0f} events/s ({during / base:.0%} of the "
              f"rate without), over {spent:.1f} s; the mutations were done {done_at:.1f} s after they were issued; "
              f"rows of the person left: {left}")
        after, _, _ = insert_rate(ch, seconds)
        print(f"insert rate after, no mutation: {after:,.0f} events/s")
    finally:
        ch.execute(f"DROP DATABASE IF EXISTS {db}")


# ---------------------------------------------------------------- retention: disk per million, a run, migration 3

def _metadata(rnd: random.Random, kind: str, n: int) -> str:
    if kind == "click":
        button = rnd.choice(["buy", "more", "close"])
        m: dict = {"selector": f"main > div.card:nth-child({n % 12}) > button.btn-{button}",
                   "text": rnd.choice(["Add to cart", "Read more", "Close", "Next"]), "x": rnd.randint(0, 1920),
                   "y": rnd.randint(0, 1080)}
    elif kind == "network":
        m = {"method": rnd.choice(["GET", "POST"]), "status": rnd.choice([200, 200, 200, 304, 404, 500]),
             "url": f"https://api.shop.test/v1/items/{rnd.randint(1, 5000)}", "duration_ms": rnd.randint(20, 3000)}
    elif kind == "error":
        m = {"message": f"TypeError: Cannot read properties of undefined (reading 'item{n % 50}')",
             "stack": "\n".join(f"    at fn{k} (https://shop.test/static/app.{n % 7}.js:{rnd.randint(1, 9000)}:"
                                f"{rnd.randint(1, 80)})" for k in range(6))}
    elif kind == "web_vital":
        m = {"name": rnd.choice(["LCP", "CLS", "INP", "FCP", "TTFB"]), "value": round(rnd.random() * 3000, 2)}
    elif kind == "page_view":
        m = {"title": f"Product {n % 400} - Shop", "referrer": rnd.choice(["", "https://www.google.com/"]),
             "viewport": "1280x720"}
    else:
        m = {"from": f"/p/{n % 400}", "to": f"/p/{(n + 1) % 400}", "value": n % 97}
    return json.dumps(m, separators=(",", ":"))


def fill_events(ch: client.ClickHouse, events: int, now_ms: int, seed: int = 7, legacy: bool = False) -> None:
    """Write ``events`` events in batches of 40 sessions x 25 events, over the 30 days before ``now_ms``,
    in time order (a batch holds the events of one moment, as ingest's do); projects ``shop0``..``shop19``,
    ``shop0``..``shop4`` with ``retention_days`` 7. ``legacy``: into the ``events`` of before migration 3
    (no ``retention_days``)."""
    rnd = random.Random(seed)  # noqa: S311 -- test data, not secrets
    per_session, per_batch = 25, 40
    sessions = -(-events // per_session)
    written, s = 0, 0
    while written < events:
        batches = []
        for _ in range(min(per_batch, -(-(events - written) // per_session))):
            start = now_ms - 30 * DAY + s * (30 * DAY // sessions)  # in time order, as they arrive
            evs = []
            for j in range(min(per_session, events - written)):
                kind = _TYPES[rnd.randrange(len(_TYPES))]
                evs.append({"session_id": f"s{s:08d}", "event_id": str(uuid.UUID(int=rnd.getrandbits(128))),
                            "type": kind, "ts_ms": start + j * 4000,
                            "url": f"https://shop.test/p/{rnd.randint(1, 400)}",
                            "name": "checkout" if kind == "custom" else "", "anonymous_id": f"a{s % 50000:06d}",
                            "metadata": _metadata(rnd, kind, s + j)})
                written += 1
            batches.append({"project": f"shop{s % 20}", "batch_id": uuid.uuid4().hex, "received_at": start + 100_000,
                            "request_id": uuid.uuid4().hex, "retention_days": 7 if s % 20 < 5 else 0, "events": evs})
            s += 1
            if written >= events:
                break
        if legacy:
            ch.insert("events", queries.EVENT_COLUMNS, [r[:-1] for r in queries.event_rows(batches)])
        else:
            queries.insert_events(ch, batches)


def retention(ch: client.ClickHouse, events: int) -> None:
    from app import retention

    f = migrations.migrate(ch)
    _, took = timed(fill_events, ch, events, int(time.time() * 1000))
    print(f"ClickHouse {f.version}: wrote {events:,} events in {took:.1f} s")
    time.sleep(20)  # let the background merges settle
    for table, (n, size, raw, count, partitions) in sorted(parts(ch).items()):
        print(f"{table}: {n:,} rows, {size:,} bytes on disk ({size / events * 1e6 / 2**20:.1f} MiB per million "
              f"events; uncompressed {raw:,}), {count} parts in {partitions} partitions")
    t0 = time.monotonic()
    plan = retention.plan(ch, "", dt.date.today() + dt.timedelta(days=1), 90, {f"shop{k}": 7 for k in range(5)})
    for d in plan:
        ch.execute(f"ALTER TABLE {ch.database}.{d.table} DROP PARTITION {d.partition}")
    print(f"retention as of tomorrow (7-day class): dropped {len(plan)} partitions, {sum(d.rows for d in plan):,} "
          f"rows, {sum(d.bytes for d in plan):,} bytes in {time.monotonic() - t0:.2f} s")


def move(ch: client.ClickHouse, events: int) -> None:
    """Time ClickHouse migration 3 (``migrations.move_events``) on ``events`` rows of the landed layout."""
    f = migrations.detect(ch)
    for statement in migrations.ddl(ch.database, f, legacy=True):
        ch.execute(statement)
    fill_events(ch, events, int(time.time() * 1000), legacy=True)
    time.sleep(20)  # let the background merges settle
    copied, took = timed(migrations.move_events, ch)
    print(f"ClickHouse {f.version}: migration 3 moved {copied:,} events in {took:.1f} s "
          f"({copied / took:,.0f} rows/s); legacy_events after: {migrations.legacy_events(ch)}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser("python -m devtools.cost", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    m = sub.add_parser("migration", help="migration 2 (session tables to their time partitioning)")
    m.add_argument("--rows", type=int, default=2_000_000)
    m.add_argument("--engine", choices=("server", "chdb"), default="server")
    d = sub.add_parser("deletion", help="a deletion's mutations: the insert rate before, during, after")
    d.add_argument("--rows", type=int, default=1_000_000)
    d.add_argument("--seconds", type=float, default=10.0)
    d.add_argument("--url", default="", help="a ClickHouse URL (its database is dropped and made again)")
    r = sub.add_parser("retention", help="disk per million events and a retention run (--move: migration 3)")
    r.add_argument("--events", type=int, default=1_000_000)
    r.add_argument("--move", action="store_true",
                   help="instead: time migration 3 (events to the retention layout) on that many legacy rows")
    args = ap.parse_args(argv)
    if args.what == "migration":
        with clickhouse("obs_move", chdb=args.engine == "chdb") as ch:
            migration(ch, args.rows)
    elif args.what == "deletion":
        with clickhouse("obs_delete", url=args.url) as ch:
            deletion(ch, args.rows, args.seconds)
    else:
        with clickhouse("cost") as ch:
            (move if args.move else retention)(ch, args.events)


if __name__ == "__main__":
    main()
