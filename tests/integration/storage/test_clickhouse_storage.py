"""ClickHouse schema and queries on both engines (18.16 server and chDB 26.x)."""
from __future__ import annotations

import json
import time
import uuid

from app.storage.clickhouse import migrations
from app.storage.clickhouse import queries as events_repo

NOW = int(time.time() * 1000)  # TTL (where the engine has it) is on received_at: keep it recent
T0 = NOW - 60_000


def _batch(batch_id, sid, events, project="p1", received=NOW):
    return {"batch_id": batch_id, "project": project, "request_id": f"req-{batch_id}", "received_at": received,
            "events": [{"event_id": str(uuid.uuid4()), "type": t, "ts_ms": ts, "session_id": sid, "url": url,
                        "name": "", "anonymous_id": "anon",
                        "metadata": json.dumps(meta, separators=(",", ":"), ensure_ascii=False)}
                       for t, ts, url, meta in events]}


def test_features_match_engine(ch):
    f = migrations.detect(ch)
    if ch.kind == "server":
        assert f.version.startswith("18.16") and not f.datetime64 and not f.ttl
    else:
        assert f.datetime64 and f.ttl and f.low_cardinality
    # dedup state lives for the window (+1 h margin) where the engine has TTL, and no longer
    ids_ddl = ch.execute("SELECT create_table_query FROM system.tables WHERE database = %(db)s AND name = 'event_ids'",
                         {"db": ch.database})[0][0]
    assert ("TTL" in ids_ddl) == f.ttl and (not f.ttl or "90000" in ids_ddl), ids_ddl
    # migrating twice is harmless
    migrations.migrate(ch)


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
        events_repo.insert_session_rows(ch, [events_repo.session_row(
            project="p1", session_id="s9", version=1, totals=totals, finalized_reason="idle", finalized_at_ms=99,
            webhook_id="p1:s9:1", status="delivered")])
    rows = ch.execute(f"SELECT session_id, duration_ms, status FROM {ch.database}.sessions FINAL")
    assert rows == [("s9", 50, "delivered")]


def test_quote_escapes_hostile_strings(ch):
    hostile = "x' OR 1=1 -- \\' \n"
    assert ch.execute("SELECT %(v)s", {"v": hostile})[0][0] == hostile


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


def _engine_full(ch, table):
    return ch.execute("SELECT engine_full FROM system.tables WHERE database = %(d)s AND name = %(t)s",
                      {"d": ch.database, "t": table})[0][0]


def test_ttls_follow_the_settings_of_each_start(ch):
    """DEDUP_WINDOW changed after the tables exist reaches event_ids at the next start (CREATE
    TABLE IF NOT EXISTS alone kept the first one); 18.16 has no TTL and drops event_ids days by
    the current window instead (test_expired_event_ids_days_are_dropped). ``events`` has no TTL
    on any engine since migration 3: the retention job drops its partitions (test_retention.py)."""
    f = migrations.detect(ch)
    assert "TTL" not in _engine_full(ch, "events")
    if not f.ttl:
        assert migrations.migrate(ch, ttl_days=30, dedup_window=3600) == f
        assert "TTL" not in _engine_full(ch, "event_ids")
        return
    migrations.migrate(ch, ttl_days=30, dedup_window=3600)
    assert "toIntervalSecond(7200)" in _engine_full(ch, "event_ids")  # the window + 1 h margin
    assert migrations.follow_ttls(ch, "", 3600) == [], "nothing to change a second time"
    assert "TTL" not in _engine_full(ch, "events")


class _Capped:
    """The backend with every query capped at ``max_rows_to_read``: the server refuses a query
    that would read more rows (ClickHouse's own accounting, not a timing)."""

    def __init__(self, ch, rows):
        self.ch, self.database, self.kind, self.rows = ch, ch.database, ch.kind, rows

    def execute(self, sql, params=None):
        return self.ch.execute(f"{sql} SETTINGS max_rows_to_read = {self.rows}", params)


def test_the_reconciliation_reads_the_recent_partitions_not_the_history(ch):
    """40 days of history (5,000 session_batches rows and 100 sessions rows a day) and one lost
    version of the last hour: the reconciliation's query (last 6.5 h) reads under 50,000 rows
    (ClickHouse counts whole granules of up to 8,192 rows: a few recent parts). Unpartitioned
    (before), it read the whole history, 204,000 rows."""
    assert migrations.unpartitioned(ch) == []
    day, hour = 86_400_000, 3_600_000
    batches = [("p", f"s{d}-{i}", 1, f"b{d}-{i}", 1, NOW - (d + 2) * day) for d in range(40) for i in range(5000)]
    batches.append(("p", "lost", 1, "b-lost", 2, NOW - hour))
    ch.insert("session_batches", ("project", "session_id", "version", "batch_id", "events", "created_ms"), batches)
    sessions = [("p", f"s{d}-{i}", 1, 0, 0, 0, 1, "{}", "idle", NOW - (d + 2) * day, NOW - (d + 2) * day,
                 f"p:s{d}-{i}:1", "delivered") for d in range(40) for i in range(100)]
    events_repo.insert_session_rows(ch, sessions)
    found = events_repo.unrecorded_versions(_Capped(ch, 50_000), since_ms=NOW - 6 * hour - hour // 2,
                                            quiet_before_ms=NOW, limit=500)
    assert found == [("p", "lost", 1, 1)]


def test_totals_from_the_rows_equal_the_aggregate_queries(ch):
    """The forward reads a version's rows once and counts them in Python when it read them all:
    the same counts, times, pages and request ids as session_totals' three queries, ties and
    non-ASCII values (their order) included, and the same caps."""
    import random

    rnd = random.Random(7)  # noqa: S311 -- test data, not secrets
    urls = ["https://a.test/", "https://a.test/é", "https://a.test/Z", "https://a.test/a", "", "https://b.test/ü"]
    batches = []
    for b in range(12):
        events = [(rnd.choice(["click", "page_view", "error", "custom"]), T0 + rnd.randint(0, 5) * 1000,
                   rnd.choice(urls), {"i": i}) for i in range(rnd.randint(1, 9))]
        batches.append(_batch(f"tb{b}", "st", events, received=NOW - rnd.randint(0, 3) * 1000))
        batches[-1]["request_id"] = rnd.choice(["", "req-ä", "req-A", "req-b", f"req-{b}"])
    events_repo.insert_events(ch, batches)
    events_repo.insert_session_batches(ch, [("p1", "st", 1, b["batch_id"], len(b["events"])) for b in batches])
    rows = events_repo.session_events(ch, "p1", "st", 1, 1000)
    for pages, rids in ((50, 100), (2, 3)):
        assert events_repo.totals_from_rows(rows, pages, rids) == events_repo.session_totals(ch, "p1", "st", 1, pages,
                                                                                             rids)
