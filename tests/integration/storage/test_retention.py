"""Retention (issue 20, acceptance 1) on real servers: ClickHouse 18.16, chDB and the ZooKeeper +
18.16 cluster, with PostgreSQL for the overrides, the dead letters and the record of each run.

Events older than their project's retention are gone after a run ``--as-of`` a date, younger ones
kept, a project's override honoured; the parts that stay are the very parts that were there (same
names: nothing rewritten) and no mutation ran: whole partitions were dropped.
"""
from __future__ import annotations

import datetime as dt
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from app import retention
from app.observability import metrics
from app.settings import load_settings
from app.storage import postgres
from app.storage.clickhouse import client, migrations, queries

BIN = Path(sys.executable).parent
AS_OF = dt.date(2026, 12, 7)
AGES = (100, 30, 5)  # days before AS_OF of the events written for each project
CLUSTER = "observer"
BATCH_COLUMNS = ("project", "session_id", "version", "batch_id", "events", "created_ms")


def _ms(day: dt.date, hour: int = 12) -> int:
    return int(dt.datetime.combine(day, dt.time(hour), dt.UTC).timestamp() * 1000)


def _fill(ch, settings=None) -> None:
    """Per project ('keep': no override, 'short': 7 days) one batch of 3 events at each age, each
    batch written by one INSERT (one part per partition, so no merge can rename a part)."""
    batches = []
    for project, klass in (("keep", 0), ("short", 7)):
        for age in AGES:
            t = _ms(AS_OF - dt.timedelta(days=age))
            batches.append({"project": project, "batch_id": f"{project}-{age}", "received_at": t, "request_id": "r",
                            "retention_days": klass,
                            "events": [{"session_id": f"{project}-{age}", "event_id": str(uuid.uuid4()),
                                        "type": "click", "ts_ms": t + i, "url": "https://x.test/", "name": "",
                                        "anonymous_id": "", "metadata": "{}"} for i in range(3)]})
    queries.insert_events(ch, batches, settings=settings)
    ch.insert("session_batches", BATCH_COLUMNS,
              [("keep", f"keep-{age}", 1, f"keep-{age}", 3, _ms(AS_OF - dt.timedelta(days=age))) for age in AGES],
              settings=settings)


def _events(ch) -> set[tuple[str, int]]:
    """(project, age in days) of the stored events."""
    rows = ch.execute(f"SELECT project, session_id, count() FROM {ch.database}.events GROUP BY project, session_id")  # noqa: S608
    return {(str(p), int(str(s).rsplit("-", 1)[1])) for p, s, _n in rows}


def _parts(ch, tables, cluster: str = "") -> set[tuple[str, str, str]]:
    source = f"cluster({CLUSTER}, system, parts)" if cluster else "system.parts"
    return {(str(t), str(p).strip("'"), str(n)) for t, p, n in ch.execute(
        f"SELECT table, partition, name FROM {source} WHERE database = %(d)s AND active AND table IN %(t)s",  # noqa: S608
        {"d": ch.database, "t": tuple(tables)})}


def _mutations(ch) -> int:
    return int(ch.execute("SELECT count() FROM system.mutations WHERE database = %(d)s", {"d": ch.database})[0][0])


def _settings(database_url: str, clickhouse_url: str, cluster: str = ""):
    return load_settings(environ={}, overrides={"DATABASE_URL": database_url, "CLICKHOUSE_URL": clickhouse_url,
                                                "CLICKHOUSE_CLUSTER": cluster})


def _dead_letters(database_url: str) -> None:
    with postgres.cursor(database_url) as cur:
        for age in (40, 3):
            cur.execute("INSERT INTO dead_letters (kind, ref, payload, error, created_at) VALUES "
                        "('poison_batch', %s, '{}', 'x', %s)",
                        (f"dl-{age}", dt.datetime.combine(AS_OF, dt.time(), dt.UTC) - dt.timedelta(days=age)))


def _refs(database_url: str) -> list[str]:
    with postgres.cursor(database_url) as cur:
        cur.execute("SELECT ref FROM dead_letters ORDER BY ref")
        return [r["ref"] for r in cur.fetchall()]


def _check_run(ch, s, database_url: str, cluster: str = "") -> None:
    t = migrations.local_table if cluster else (lambda name: name)
    # event_ids is left out: where the engine has TTL (chDB) its expired rows are merged away by the
    # server at any moment (a part's level goes up: 20261202_3_3_1 -> _3_3_2), which is not the
    # retention job's doing; the job never touches it, and the mutation count below covers it.
    tables = [t("events"), t("session_batches")]
    retention.set_project(database_url, "short", 7)
    _dead_letters(database_url)
    assert _events(ch) == {(p, a) for p in ("keep", "short") for a in AGES}
    before = _parts(ch, tables, cluster)
    result = retention.run(s, ch, AS_OF)
    # keep (RETENTION_DAYS 90): 100 days old gone, 30 and 5 kept; short (override 7): only 5 kept
    assert _events(ch) == {("keep", 30), ("keep", 5), ("short", 5)}
    dropped = {(d.table, d.partition, d.retention_class, ",".join(d.projects)) for d in result.dropped}
    day = {a: (AS_OF - dt.timedelta(days=a)).strftime("%Y%m%d") for a in AGES}
    assert dropped == {("events", f"(0,{day[100]})", "default (90 d)", "*"),
                       ("events", f"(7,{day[100]})", "7 d", "short"),
                       ("events", f"(7,{day[30]})", "7 d", "short"),
                       ("session_batches", day[100], "longest (90 d)", "*")}, dropped
    assert all(d.bytes > 0 and d.rows > 0 for d in result.dropped)
    after = _parts(ch, tables, cluster)
    gone = {(tb, p) for tb, p, _n in before - after}
    assert after <= before, "no part was written: the parts left are the parts that were there, same names"
    assert gone == {(t(d[0]), d[1]) for d in dropped}, "exactly the dropped partitions' parts went"
    assert _mutations(ch) == 0, "no ALTER ... DELETE"
    assert _refs(database_url) == ["dl-3"], "dead letters older than DEAD_LETTER_RETENTION_DAYS (30) deleted"
    assert metrics.RETENTION_LAST_SUCCESS._value.get() > 0  # noqa: SLF001
    again = retention.run(s, ch, AS_OF)
    assert again.dropped == [] and again.dead_letters == 0
    runs = retention.runs(database_url)
    assert [(r["id"], r["ok"], r["partitions"]) for r in runs[:2]] == [
        (again.run_id, True, 0), (result.run_id, True, 4)]
    assert runs[1]["bytes"] == result.bytes


def test_retention_run_drops_expired_partitions_whole(ch, clickhouse_url, clean_pg):
    _fill(ch)
    s = _settings(clean_pg, clickhouse_url)
    _check_run(ch, s, clean_pg)


@pytest.mark.xdist_group("client-cluster")
@pytest.mark.parametrize("layout", [(2, 1), (1, 2)], ids=["2shards", "2replicas"])
def test_retention_on_the_cluster_layout(clickhouse_clusters, layout, clean_pg):
    topology = clickhouse_clusters(*layout)
    db = f"obs_r_{uuid.uuid4().hex[:10]}"
    ch = client.get_clickhouse(topology.url(db))
    try:
        migrations.migrate(ch, cluster=CLUSTER)
        _fill(ch, settings={"insert_distributed_sync": 1})
        _check_run(ch, _settings(clean_pg, topology.url(db), CLUSTER), clean_pg, CLUSTER)
    finally:
        ch.execute(f"DROP DATABASE IF EXISTS {db} ON CLUSTER {CLUSTER}")
        client.close_all()


def test_the_worker_stamps_each_project_class(ch, clean_pg):
    """persist_batches writes each project's override as the rows' class (0 without one)."""
    from app.events.persist import persist_batches

    retention.set_project(clean_pg, "short", 7)
    now = _ms(dt.date.today())
    batches = [{"project": p, "batch_id": f"b-{p}", "received_at": now, "events": [
        {"session_id": "s", "event_id": str(uuid.uuid4()), "type": "click", "ts_ms": now, "url": "u", "name": "",
         "anonymous_id": "", "metadata": "{}"}]} for p in ("keep", "short")]
    persist_batches(ch, batches, retention=retention.classes(clean_pg, max_age_s=0))
    rows = ch.execute(f"SELECT project, retention_days FROM {ch.database}.events ORDER BY project")  # noqa: S608
    assert [(str(p), int(c)) for p, c in rows] == [("keep", 0), ("short", 7)]


def test_the_commands_as_written(clean_pg, clickhouse_server, tmp_path):
    """projects set/list, retention run --as-of and status, through flask, on the 18.16 server."""
    db = f"obs_r_{uuid.uuid4().hex[:10]}"
    env = {"PATH": str(BIN), "HOME": str(tmp_path), "OBSERVER_ENV_FILE": str(tmp_path / "none.env"),
           "DATABASE_URL": clean_pg, "CLICKHOUSE_URL": f"{clickhouse_server}/{db}"}
    (tmp_path / "none.env").write_text("")

    def flask(*args: str) -> str:
        out = subprocess.run([str(BIN / "flask"), "--app", "app", *args], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout

    ch = client.get_clickhouse(f"{clickhouse_server}/{db}")
    try:
        migrations.migrate(ch)
        _fill(ch)
        assert flask("projects", "set", "short", "--retention-days", "7").strip() == "project short: retention 7 days"
        assert "short\tretention 7 days (override)" in flask("projects", "list")
        out = flask("retention", "run", "--as-of", AS_OF.isoformat())
        assert "total events\t7 d\tprojects short\t2 partitions\t6 rows" in out, out
        assert "total events\tdefault (90 d)\tprojects *\t1 partitions\t3 rows" in out, out
        last = out.splitlines()[-1]
        assert last.startswith("retention: run ") and " dropped 4 partitions" in last, out
        run_id = last.split()[2]
        assert _events(ch) == {("keep", 30), ("keep", 5), ("short", 5)}
        assert "dropped 0 partitions" in flask("retention", "run", "--as-of", AS_OF.isoformat())
        assert flask("retention", "status").splitlines()[1].startswith(f"run {run_id}\tas of 2026-12-07\tok")
    finally:
        ch.execute(f"DROP DATABASE IF EXISTS {db}")
        client.close_all()
