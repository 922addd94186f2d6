"""Retention's pure parts: the retired setting, the partition ages, the printed lines, beat's entry."""
from __future__ import annotations

import datetime as dt

import pytest

from app import retention
from app.names import ROUTES, Queue, TaskName
from app.settings import ConfigError, defaults, load_settings
from app.storage.clickhouse import queries


def test_clickhouse_ttl_days_is_retired_with_a_message_naming_retention_days():
    with pytest.raises(ConfigError, match="CLICKHOUSE_TTL_DAYS: retired; set RETENTION_DAYS"):
        load_settings(environ={"CLICKHOUSE_TTL_DAYS": "30"})
    s = load_settings(environ={"RETENTION_DAYS": "30", "DEAD_LETTER_RETENTION_DAYS": "7"})
    assert (s.retention_days, s.dead_letter_retention_days) == (30, 7)
    assert (defaults().retention_days, defaults().dead_letter_retention_days) == (90, 30)
    with pytest.raises(ConfigError, match="RETENTION_DAYS"):
        load_settings(environ={"RETENTION_DAYS": "0"})


def test_month_end_and_day():
    assert retention._month_end("202602") == dt.date(2026, 2, 28)  # noqa: SLF001
    assert retention._month_end("202612") == dt.date(2026, 12, 31)  # noqa: SLF001
    assert retention._day("20261207") == dt.date(2026, 12, 7)  # noqa: SLF001


def test_rows_carry_the_batch_class_or_0():
    event = {"session_id": "s", "event_id": "e", "type": "click", "ts_ms": 1, "url": "u", "name": "",
             "anonymous_id": "", "metadata": "{}"}
    rows = queries.event_rows([{"project": "p", "batch_id": "b", "received_at": 1, "events": [event]},
                               {"project": "p", "batch_id": "c", "received_at": 1, "events": [event],
                                "retention_days": 7}])
    assert [r[-1] for r in rows] == [0, 7] and len(rows[0]) == len(queries.INSERT_EVENT_COLUMNS)


def test_lines_per_partition_then_per_table_and_class():
    r = retention.Result("2026-12-07", 90, 90, [
        retention.Dropped("events", "7 d", ["shop"], "(7,20261101)", 3, 100),
        retention.Dropped("events", "7 d", ["shop"], "(7,20261102)", 2, 50)], dead_letters=1, run_id=4)
    out = retention.lines(r)
    assert "total events\t7 d\tprojects shop\t2 partitions\t5 rows\t150 bytes" in out
    assert out[-1].startswith("retention: run 4 dropped 2 partitions, 150 bytes, 1 dead letters")
    assert r.as_json()["bytes"] == 150


def test_beat_runs_retention_daily_on_the_maintenance_queue():
    from tasks.app import beat_schedule

    entry = beat_schedule(defaults())[TaskName.MAINTENANCE_RETENTION.value]
    assert entry["schedule"] == 86400.0 and entry["options"]["queue"] == Queue.MAINTENANCE.value
    assert ROUTES[TaskName.MAINTENANCE_RETENTION] is Queue.MAINTENANCE


def test_classes_are_cached_and_postgresql_away_is_asked_once_a_minute(monkeypatch):
    calls = []

    def overrides(url):
        calls.append(url)
        if len(calls) > 1:
            raise OSError("postgres away")
        return {"shop": 7}

    monkeypatch.setattr(retention, "overrides", overrides)
    monkeypatch.setattr(retention, "_cache", {})
    assert retention.classes("pg://x") == {"shop": 7}
    assert retention.classes("pg://x") == {"shop": 7} and len(calls) == 1, "cached"
    assert retention.classes("pg://x", max_age_s=0) == {"shop": 7} and len(calls) == 2, "the last known"
    assert retention.classes("pg://x") == {"shop": 7} and len(calls) == 2, "not asked again at once"
