"""Disk cost of events per million, and a retention run over them (docs/OPERATIONS.md#retention).

``python -m devtools.retention_cost [--events 1000000]`` starts a private ClickHouse 18.16 server,
migrates an empty database, writes ``--events`` SDK-like events (page views, clicks, errors with
stacks, network calls, web vitals; 25 events a session, 40 sessions a batch, over 30 days, 20
projects of which 5 have a 7-day override) through the pipeline's own INSERT, and prints the bytes on
disk of each table's active parts (after the merges settle), then times a retention run as of the
next day on it.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import tempfile
import time
import uuid
from pathlib import Path

from app.storage.clickhouse import client, migrations, queries
from devtools.servers.clickhouse import start_clickhouse_server

DAY_MS = 86_400_000
_TYPES = ("page_view", "click", "click", "click", "network", "network", "error", "web_vital", "navigation", "custom")


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


def fill(ch: client.ClickHouse, events: int, now_ms: int, seed: int = 7, legacy: bool = False) -> None:
    """Write ``events`` events in batches of 40 sessions x 25 events, over the 30 days before ``now_ms``,
    in time order (a batch holds the events of one moment, as ingest's do). ``legacy``: into the
    ``events`` of before migration 3 (no ``retention_days``)."""
    rnd = random.Random(seed)  # noqa: S311 -- test data, not secrets
    per_session, per_batch = 25, 40
    sessions = -(-events // per_session)
    written, s = 0, 0
    while written < events:
        batches = []
        for _ in range(min(per_batch, -(-(events - written) // per_session))):
            project = f"shop{s % 20}"
            start = now_ms - 30 * DAY_MS + s * (30 * DAY_MS // sessions)  # in time order, as they arrive
            evs = []
            for j in range(min(per_session, events - written)):
                kind = _TYPES[rnd.randrange(len(_TYPES))]
                evs.append({"session_id": f"s{s:08d}", "event_id": str(uuid.UUID(int=rnd.getrandbits(128))),
                            "type": kind, "ts_ms": start + j * 4000,
                            "url": f"https://shop.test/p/{rnd.randint(1, 400)}",
                            "name": "checkout" if kind == "custom" else "", "anonymous_id": f"a{s % 50000:06d}",
                            "metadata": _metadata(rnd, kind, s + j)})
                written += 1
            batches.append({"project": project, "batch_id": uuid.uuid4().hex, "received_at": start + 100_000,
                            "request_id": uuid.uuid4().hex, "retention_days": 7 if s % 20 < 5 else 0, "events": evs})
            s += 1
            if written >= events:
                break
        if legacy:
            ch.insert("events", queries.EVENT_COLUMNS, [r[:-1] for r in queries.event_rows(batches)])
        else:
            queries.insert_events(ch, batches)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--move", action="store_true",
                    help="instead: time migration 3 (events to the retention layout) on that many legacy rows")
    args = ap.parse_args()
    if args.move:
        move_cost(args.events)
        return
    with tempfile.TemporaryDirectory(prefix="retention-cost-") as tmp:
        server = start_clickhouse_server(Path(tmp) / "ch")
        try:
            ch = client.get_clickhouse(server.url.rsplit("/", 1)[0] + "/cost")
            f = migrations.migrate(ch)
            now = int(time.time() * 1000)
            t0 = time.monotonic()
            fill(ch, args.events, now)
            print(f"ClickHouse {f.version}: wrote {args.events:,} events in {time.monotonic() - t0:.1f} s")
            time.sleep(20)  # let the background merges settle
            rows = ch.execute("SELECT table, sum(rows), sum(bytes_on_disk), sum(data_uncompressed_bytes), count(), "
                              "uniqExact(partition) FROM system.parts WHERE database = 'cost' AND active "
                              "GROUP BY table ORDER BY table")
            for table, n, size, raw, parts, partitions in rows:
                per_million = int(size) / args.events * 1e6 / 2**20
                print(f"{table}: {int(n):,} rows, {int(size):,} bytes on disk ({per_million:.1f} MiB per million "
                      f"events; uncompressed {int(raw):,}), {parts} parts in {partitions} partitions")
            from app import retention

            t0 = time.monotonic()
            plan = retention.plan(ch, "", dt.date.today() + dt.timedelta(days=1), 90, {f"shop{k}": 7 for k in range(5)})
            for d in plan:
                ch.execute(f"ALTER TABLE cost.{d.table} DROP PARTITION {d.partition}")
            print(f"retention as of tomorrow (7-day class): dropped {len(plan)} partitions, "
                  f"{sum(d.rows for d in plan):,} rows, {sum(d.bytes for d in plan):,} bytes in "
                  f"{time.monotonic() - t0:.2f} s")
        finally:
            client.close_all()
            server.stop()


def move_cost(events: int) -> None:
    """Time ClickHouse migration 3 (``migrations.move_events``) on ``events`` rows of the landed layout."""
    with tempfile.TemporaryDirectory(prefix="retention-cost-") as tmp:
        server = start_clickhouse_server(Path(tmp) / "ch")
        try:
            ch = client.get_clickhouse(server.url.rsplit("/", 1)[0] + "/cost")
            f = migrations.detect(ch)
            for statement in migrations.ddl("cost", f, legacy=True):
                ch.execute(statement)
            fill(ch, events, int(time.time() * 1000), legacy=True)
            time.sleep(20)  # let the background merges settle
            t0 = time.monotonic()
            copied = migrations.move_events(ch)
            took = time.monotonic() - t0
            print(f"ClickHouse {f.version}: migration 3 moved {copied:,} events in {took:.1f} s "
                  f"({copied / took:,.0f} rows/s); legacy_events after: {migrations.legacy_events(ch)}")
        finally:
            client.close_all()
            server.stop()


if __name__ == "__main__":
    main()
