"""Retention (issue 20): every stored event expires as whole ClickHouse partitions, never rows.

``events`` is partitioned by (retention class, event day) (ClickHouse migration 3): the class is
the project's ``retention_days`` override (PostgreSQL ``projects.retention_days``, set with
``flask --app app projects set P --retention-days N``) stamped on each row at insert, or 0 for
projects without one, meaning ``RETENTION_DAYS`` at the time the job runs. The job
(``flask --app app retention run [--as-of DATE]``, beat's daily ``maintenance.retention``) drops:

- ``events`` partitions (class c, day d) with d < as_of - c days (an event lives c to c+1 days);
- ``session_batches`` (by day) and ``sessions`` (by month) partitions that ended more than the
  longest retention in force (RETENTION_DAYS and every override) ago: they hold ids and counts,
  no event content, and are kept as long as any project's events may be;
- dead letters older than ``DEAD_LETTER_RETENTION_DAYS`` (PostgreSQL rows).

``event_ids`` lives the dedup window and is dropped by the reconciliation (and TTL where the
engine has it). Each run is recorded in PostgreSQL (``retention_runs``) and as metrics.
A changed override applies to events inserted after it (within ``CLASS_CACHE_S``); rows already
stored keep the class they were written with (as Sentry's), so they leave under the old value.
A changed ``RETENTION_DAYS`` applies to every class-0 row at the next run.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import re
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from app.observability import metrics
from app.storage import postgres
from app.storage.clickhouse import migrations
from app.storage.clickhouse.client import ident

if TYPE_CHECKING:
    from app.settings import Settings
    from app.storage.clickhouse.client import ClickHouse

log = logging.getLogger(__name__)
CLASS_CACHE_S = 60.0  # how long a worker uses the overrides it read before reading them again
_EVENTS_PART = re.compile(r"^\((\d+),\s*(\d{8})\)$")
_DAY_PART = re.compile(r"^(\d{8})$")
_MONTH_PART = re.compile(r"^(\d{6})$")
_cache: dict[str, tuple[float, dict[str, int]]] = {}
_cache_lock = threading.Lock()


# ------------------------------------------------------------------ per-project classes
def overrides(database_url: str) -> dict[str, int]:
    """``{project: retention_days}`` of the projects with an override."""
    with postgres.cursor(database_url) as cur:
        cur.execute("SELECT name, retention_days FROM projects WHERE retention_days IS NOT NULL")
        return {str(r["name"]): int(r["retention_days"]) for r in cur.fetchall()}


def classes(database_url: str, max_age_s: float = CLASS_CACHE_S) -> dict[str, int]:
    """The overrides, read at most every ``max_age_s`` per process. PostgreSQL away: the last ones
    read (or none: class 0, the default) with a warning, asked again only ``max_age_s`` later, so
    ingest waits on it at most once a minute."""
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(database_url)
    if hit and now - hit[0] < max_age_s:
        return hit[1]
    try:
        fresh = overrides(database_url)
    except Exception as exc:  # ingest goes on with what it knew; the next flush asks again
        log.warning("retention classes not read; using the last known", extra={"error": str(exc)[:200]})
        stale = hit[1] if hit else {}
        with _cache_lock:
            _cache[database_url] = (now, stale)
        return stale
    with _cache_lock:
        _cache[database_url] = (now, fresh)
    return fresh


def set_project(database_url: str, project: str, days: int | None) -> None:
    """Set (or with None clear) a project's retention override; the project is made if new."""
    if days is not None and days < 1:
        raise ValueError("--retention-days must be at least 1")
    with postgres.cursor(database_url) as cur:
        cur.execute("INSERT INTO projects (name, retention_days) VALUES (%s, %s) "
                    "ON CONFLICT (name) DO UPDATE SET retention_days = EXCLUDED.retention_days", (project, days))


def list_projects(database_url: str) -> list[dict[str, Any]]:
    """Every project with its override (None: RETENTION_DAYS)."""
    with postgres.cursor(database_url) as cur:
        cur.execute("SELECT name, retention_days, created_at FROM projects ORDER BY name")
        return [dict(r) for r in cur.fetchall()]


# ------------------------------------------------------------------ the job
@dataclass
class Dropped:
    """One partition dropped (or, for dead letters, rows deleted)."""

    table: str
    retention_class: str  # 'default (90 d)', '7 d', 'longest (90 d)' or 'dead letters (30 d)'
    projects: list[str]
    partition: str
    rows: int
    bytes: int


@dataclass
class Result:
    """What one run dropped."""

    as_of: str
    default_days: int
    longest_days: int
    dropped: list[Dropped] = field(default_factory=list)
    dead_letters: int = 0
    seconds: float = 0.0
    run_id: int = 0

    @property
    def bytes(self) -> int:
        return sum(d.bytes for d in self.dropped)

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["bytes"] = self.bytes
        return out


def _day(yyyymmdd: str) -> dt.date:
    return dt.date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:8]))


def _month_end(yyyymm: str) -> dt.date:
    y, m = int(yyyymm[:4]), int(yyyymm[4:6])
    return (dt.date(y + (m == 12), m % 12 + 1, 1)) - dt.timedelta(days=1)


def _parts(ch: ClickHouse, cluster: str, tables: list[str]) -> list[tuple[str, str, int, int]]:
    """(table, partition, rows, bytes on disk) of the active parts (every server of a cluster)."""
    source = f"cluster({ident(cluster)}, system, parts)" if cluster else "system.parts"
    rows = ch.execute(f"SELECT table, partition, sum(rows), sum(bytes_on_disk) FROM {source} "  # noqa: S608 -- cluster name via ident(); values bound
                      "WHERE database = %(d)s AND active AND table IN %(t)s GROUP BY table, partition",
                      {"d": ch.database, "t": tuple(tables)})
    return [(str(t), str(p).strip("'"), int(r), int(b)) for t, p, r, b in rows]


def plan(ch: ClickHouse, cluster: str, as_of: dt.date, default_days: int,
         overrides_: dict[str, int]) -> list[Dropped]:
    """The partitions a run as of ``as_of`` drops (nothing is changed)."""
    if migrations.legacy_events(ch, cluster):
        raise RuntimeError("events has the layout before ClickHouse migration 3: run flask --app app migrate first")
    t = migrations.local_table if cluster else (lambda name: name)
    longest = max([default_days, *overrides_.values()])
    by_class: dict[int, list[str]] = {}
    for project, days in sorted(overrides_.items()):
        by_class.setdefault(days, []).append(project)
    out = []
    for table, partition, rows, size in sorted(_parts(ch, cluster, [t("events"), t("session_batches"), t("sessions")])):
        name = table.removesuffix(migrations.LOCAL_SUFFIX) if cluster else table
        if name == "events" and (m := _EVENTS_PART.match(partition)):
            klass = int(m.group(1))
            days = klass or default_days
            if _day(m.group(2)) < as_of - dt.timedelta(days=days):
                label = f"default ({days} d)" if klass == 0 else f"{days} d"
                out.append(Dropped(name, label, ["*"] if klass == 0 else by_class.get(klass, []),
                                   partition, rows, size))
            continue
        if name == "session_batches" and (m := _DAY_PART.match(partition)):
            ended = _day(m.group(1))
        elif name == "sessions" and (m := _MONTH_PART.match(partition)):
            ended = _month_end(m.group(1))
        else:
            continue
        if ended < as_of - dt.timedelta(days=longest):
            out.append(Dropped(name, f"longest ({longest} d)", ["*"], partition, rows, size))
    return out


_RUNS_INSERT = ("INSERT INTO retention_runs (as_of, started_at, finished_at, ok, partitions, bytes, dead_letters, "
                "detail, error) VALUES (%s, %s, now(), %s, %s, %s, %s, %s, %s) RETURNING id")


def run(settings: Settings, ch: ClickHouse, as_of: dt.date | None = None) -> Result:
    """Drop what has expired as of ``as_of`` (default: today, UTC), delete expired dead letters,
    record the run in PostgreSQL and the metrics. A failure is recorded too, then raised."""
    started = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    as_of = as_of or started.date()
    cluster = settings.clickhouse_cluster
    result = Result(as_of.isoformat(), settings.retention_days, settings.retention_days)
    try:
        known = overrides(settings.database_url)
        result.longest_days = max([settings.retention_days, *known.values()])
        db = ident(ch.database)
        on = f" ON CLUSTER {ident(cluster)}" if cluster else ""
        for d in plan(ch, cluster, as_of, settings.retention_days, known):
            if not re.fullmatch(r"[(),\d\s]+", d.partition):
                raise RuntimeError(f"unexpected partition {d.partition!r}")
            table = migrations.local_table(d.table) if cluster else d.table
            ch.execute(f"ALTER TABLE {db}.{ident(table)}{on} DROP PARTITION {d.partition}")
            result.dropped.append(d)
            metrics.RETENTION_BYTES.labels(d.table).inc(d.bytes)
            metrics.RETENTION_PARTITIONS.labels(d.table).inc()
        cutoff = dt.datetime.combine(as_of, dt.time(), dt.UTC) - dt.timedelta(days=settings.dead_letter_retention_days)
        with postgres.cursor(settings.database_url) as cur:
            cur.execute("DELETE FROM dead_letters WHERE created_at < %s", (cutoff,))
            result.dead_letters = cur.rowcount
        result.seconds = time.monotonic() - t0
        result.run_id = _record(settings.database_url, started, result, "")
    except Exception as exc:
        result.seconds = time.monotonic() - t0
        try:
            _record(settings.database_url, started, result, f"{type(exc).__name__}: {exc}"[:1000])
        except Exception:  # PostgreSQL away: the raise below says what failed
            log.exception("retention run not recorded")
        raise
    metrics.RETENTION_LAST_SUCCESS.set(time.time())
    log.info("retention run", extra={"as_of": result.as_of, "partitions": len(result.dropped),
                                     "bytes": result.bytes, "dead_letters": result.dead_letters})
    return result


def _record(database_url: str, started: dt.datetime, r: Result, error: str) -> int:
    detail = json.dumps([asdict(d) for d in r.dropped])
    with postgres.cursor(database_url) as cur:
        cur.execute(_RUNS_INSERT, (r.as_of, started, not error, len(r.dropped), r.bytes, r.dead_letters, detail,
                                   error or None))
        return int(postgres.returned(cur)["id"])


def runs(database_url: str, limit: int = 10) -> list[dict[str, Any]]:
    """The last runs, newest first."""
    with postgres.cursor(database_url) as cur:
        cur.execute("SELECT id, as_of, started_at, finished_at, ok, partitions, bytes, dead_letters, error "
                    "FROM retention_runs ORDER BY id DESC LIMIT %s", (limit,))
        return [dict(r) for r in cur.fetchall()]


def lines(r: Result) -> list[str]:
    """The human output of a run: one line per partition, then per table and class, then a total."""
    out = [f"retention: as of {r.as_of} (RETENTION_DAYS {r.default_days}, longest in force {r.longest_days})"]
    for d in r.dropped:
        out.append(f"{d.table}\t{d.retention_class}\t{','.join(d.projects) or '-'}\tpartition {d.partition}\t"
                   f"{d.rows} rows\t{d.bytes} bytes")
    totals: dict[tuple[str, str, str], list[int]] = {}
    for d in r.dropped:
        acc = totals.setdefault((d.table, d.retention_class, ",".join(d.projects) or "-"), [0, 0, 0])
        acc[0] += 1
        acc[1] += d.rows
        acc[2] += d.bytes
    for (table, klass, projects), (n, rows, size) in sorted(totals.items()):
        out.append(f"total {table}\t{klass}\tprojects {projects}\t{n} partitions\t{rows} rows\t{size} bytes")
    out.append(f"dead_letters\tolder than the retention\t{r.dead_letters} deleted")
    out.append(f"retention: run {r.run_id} dropped {len(r.dropped)} partitions, {r.bytes} bytes, "
               f"{r.dead_letters} dead letters in {r.seconds:.1f} s")
    return out
