"""ClickHouse schema and queries on both engines (18.16 server and chDB 26.x)."""
from __future__ import annotations

import json
import time
import uuid

from app.storage import clickhouse_migrations, events_repo

NOW = int(time.time() * 1000)  # TTL (where the engine has it) is on received_at: keep it recent
T0 = NOW - 60_000


def _batch(batch_id, sid, events, project="p1", received=NOW):
    return {"batch_id": batch_id, "project": project, "request_id": f"req-{batch_id}", "received_at": received,
            "events": [{"event_id": str(uuid.uuid4()), "type": t, "ts_ms": ts, "session_id": sid, "url": url,
                        "name": "", "anonymous_id": "anon",
                        "metadata": json.dumps(meta, separators=(",", ":"), ensure_ascii=False)}
                       for t, ts, url, meta in events]}


def test_features_match_engine(ch):
    f = clickhouse_migrations.detect(ch)
    if ch.kind == "server":
        assert f.version.startswith("18.16") and not f.datetime64 and not f.ttl
    else:
        assert f.datetime64 and f.ttl and f.low_cardinality
    # dedup state lives for the window (+1 h margin) where the engine has TTL, and no longer
    ids_ddl = ch.execute("SELECT create_table_query FROM system.tables WHERE database = %(db)s AND name = 'event_ids'",
                         {"db": ch.database})[0][0]
    assert ("TTL" in ids_ddl) == f.ttl and (not f.ttl or "90000" in ids_ddl), ids_ddl
    # migrating twice is harmless
    clickhouse_migrations.migrate(ch)


def test_ms_precision_metadata_roundtrip_and_dedup(ch):
    meta = {"nested": {"list": [1, 2.5, "x", None, True], "emoji": "😀 é 'quote' \\ back"}, "n": 12345678901234}
    b = _batch("b1", "s1",
               [("click", T0 + 123, "https://a.test/x", meta), ("page_view", T0 + 1, "https://a.test/", {})])
    events_repo.insert_events(ch, [b])
    events_repo.insert_events(ch, [b])  # a redelivery whose marker was lost
    events_repo.insert_session_batches(ch, [("p1", "s1", 1, "b1", 2)])
    events_repo.insert_session_batches(ch, [("p1", "s1", 1, "b1", 2)])
    rows = events_repo.session_events(ch, "p1", "s1", 1, 100)
    assert [r["ts_ms"] for r in rows] == [T0 + 1, T0 + 123]
    assert json.loads(rows[1]["metadata"]) == meta
    totals = events_repo.session_totals(ch, "p1", "s1", 1, 10, 10)
    assert totals["event_count"] == 2 and totals["counts"] == {"click": 1, "page_view": 1}
    assert totals["first_ts_ms"] == T0 + 1 and totals["last_ts_ms"] == T0 + 123
    assert totals["pages"] == ["https://a.test/", "https://a.test/x"]
    assert totals["request_ids"] == ["req-b1"]
    assert events_repo.count_session_batches(ch, "p1", "s1", 1) == 1
    db = ch.database
    assert ch.execute(f"SELECT uniqExact(event_id) FROM {db}.events")[0][0] == 2
    assert ch.execute(f"SELECT count() FROM {db}.events FINAL")[0][0] == 2


def test_versions_are_separated_by_batch_mapping(ch):
    b1 = _batch("v1b", "s2", [("click", T0 + 100, "", {})])
    b2 = _batch("v2b", "s2", [("error", T0 + 100_100, "", {"m": "late"})])
    events_repo.insert_events(ch, [b1, b2])
    events_repo.insert_session_batches(ch, [("p1", "s2", 1, "v1b", 1), ("p1", "s2", 2, "v2b", 1)])
    assert [r["type"] for r in events_repo.session_events(ch, "p1", "s2", 1, 10)] == ["click"]
    assert [r["type"] for r in events_repo.session_events(ch, "p1", "s2", 2, 10)] == ["error"]
    assert events_repo.session_events(ch, "p1", "s2", 3, 10) == []


def test_record_forwarded_is_idempotent(ch):
    totals = {"first_ts_ms": 1, "last_ts_ms": 51, "event_count": 2, "counts": {"click": 2}}
    for _ in range(2):
        events_repo.record_forwarded(ch, project="p1", session_id="s9", version=1, totals=totals,
                                     finalized_reason="idle", finalized_at_ms=99, webhook_id="p1:s9:1",
                                     status="delivered")
    rows = ch.execute(f"SELECT session_id, duration_ms, status FROM {ch.database}.sessions FINAL")
    assert rows == [("s9", 50, "delivered")]


def test_quote_escapes_hostile_strings(ch):
    hostile = "x' OR 1=1 -- \\' \n"
    assert ch.execute("SELECT %(v)s", {"v": hostile})[0][0] == hostile


def test_pre_issue_11_events_table_is_rebuilt_and_indexed(ch):
    """A data dir from before issue 11 (events keyed without batch_id, no event_ids) migrates in place."""
    db = ch.database
    for name in ("events_dedup", "event_ids_mv", "event_ids", "events"):
        ch.execute(f"DROP TABLE IF EXISTS {db}.{name}")
    ch.execute(f"""CREATE TABLE {db}.events (project String, session_id String, event_id String, type String,
        ts_ms Int64, received_at_ms Int64, url String, name String, anonymous_id String, metadata String,
        request_id String, batch_id String) ENGINE = ReplacingMergeTree()
        PARTITION BY toYYYYMM(toDateTime(intDiv(ts_ms, 1000), 'UTC')) ORDER BY (project, session_id, event_id)""")
    b = _batch("old1", "s7", [("click", T0 + 5, "https://a.test/", {}), ("error", T0 + 9, "", {"m": 1})])
    events_repo.insert_events(ch, [b])
    clickhouse_migrations.migrate(ch)
    clickhouse_migrations.migrate(ch)  # and again: nothing left to do
    key = ch.execute("SELECT sorting_key FROM system.tables WHERE database = %(db)s AND name = 'events'", {"db": db})
    assert key == [("project, session_id, event_id, batch_id",)]
    assert ch.execute(f"SELECT count() FROM {db}.events_pre11")[0][0] == 2
    assert ch.execute(f"SELECT count() FROM {db}.event_ids")[0][0] == 2  # backfilled within the window
    events_repo.insert_session_batches(ch, [("p1", "s7", 1, "old1", 2)])
    assert [r["type"] for r in events_repo.session_events(ch, "p1", "s7", 1, 10)] == ["click", "error"]


def test_reads_keep_events_whose_ownership_rows_expired(ch):
    """event_ids lives for the window (+1 h); a forward retried later still carries every event."""
    b = _batch("exp1", "s8", [("click", T0 + 1, "", {}), ("click", T0 + 2, "", {})])
    events_repo.insert_events(ch, [b])
    events_repo.insert_session_batches(ch, [("p1", "s8", 1, "exp1", 2)])
    ch.execute(f"TRUNCATE TABLE {ch.database}.event_ids")  # what the TTL does after the window
    assert len(events_repo.session_events(ch, "p1", "s8", 1, 10)) == 2
    assert events_repo.session_totals(ch, "p1", "s8", 1, 10, 10)["event_count"] == 2


def test_expired_event_ids_days_are_dropped(ch):
    """Dedup state lives for the window: whole days past it are dropped (18.16 has no TTL)."""
    now = int(time.time() * 1000)
    old = _batch("old-day", "s10", [("click", now - 3 * 86_400_000, "", {})], received=now - 3 * 86_400_000)
    new = _batch("new-day", "s10", [("click", now, "", {})], received=now)
    events_repo.insert_events(ch, [old, new])
    dropped = events_repo.drop_expired_event_ids(ch, now - 90_000_000)
    assert dropped == [time.strftime("%Y%m%d", time.gmtime((now - 3 * 86_400_000) // 1000))]
    assert [r[0] for r in ch.execute(f"SELECT batch_id FROM {ch.database}.event_ids")] == ["new-day"]
    assert events_repo.drop_expired_event_ids(ch, now - 90_000_000) == []
