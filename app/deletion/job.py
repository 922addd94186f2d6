"""The deletion job: moves every open request one stage further per run (beat's
``maintenance.deletions`` every minute; ``data delete`` enqueues a run at once).

- ``suppressing`` -> ``deleted_hot``: finds the person's sessions (``--session-id``: that one;
  ``--anonymous-id``: every session ClickHouse or a dead-lettered batch holds with that id),
  counts then deletes their Redis state (live hash, version counter, frozen snapshots, idle and
  outbox entries, parked deliveries; a short tombstone per version keeps the reconciliation from
  forwarding what ClickHouse still holds) and their dead letters (a dead-lettered batch loses only
  this person's events), and counts their ClickHouse rows.
- ``deleted_hot`` -> ``deleted_storage``: one ``ALTER TABLE ... DELETE WHERE`` mutation per table
  for every request waiting at that moment (batched), issued only when no earlier mutation on
  those tables is still running, so at most one rewrite per table competes with ingest's inserts;
  the stage is entered once ``system.mutations`` shows them done.
- ``deleted_storage`` -> ``downstream_notified``: a signed notice to UFSE (``webhook-id:
  deletion:<id>``), retried on the next run until UFSE answers 2xx.
- ``downstream_notified`` -> ``verified``: a count of 0 in every store (ClickHouse after its
  mutations finished, Redis, dead letters). Anything found (an event queued before the
  suppression, stored after the mutation) sends the request round again.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import time
from typing import TYPE_CHECKING, Any, cast

import psycopg2.extras

from app import resources
from app.deletion import suppress
from app.deletion.store import DeletionStore
from app.forwarding import destinations, parked
from app.observability import metrics
from app.storage import postgres, redis_keys
from app.storage.clickhouse.client import ident
from app.storage.clickhouse.migrations import LOCAL_SUFFIX
from app.storage.lock import RedisLock

if TYPE_CHECKING:
    from app.sessions.store import SessionStore
    from app.storage.clickhouse.client import ClickHouse

log = logging.getLogger(__name__)
TABLES = ("events", "event_ids", "session_batches", "sessions")
MAX_ROUNDS = 5  # verification failures before a request stops going round and reports its error
MUTATION_WAIT_S = 10.0  # a run waits this long for its own mutations before leaving them to the next run
NO_SESSION = ""  # stands in for an empty session list (never a valid session_id)


def tick(*, now: float | None = None) -> int:
    """One run under the deletion lock; returns the requests still open (-1: another run holds it)."""
    s = resources.settings()
    r = resources.sessions_redis()
    lock = RedisLock(r, redis_keys.deletions_lock(s.redis_key_prefix), 300_000)
    if not lock.acquire():
        return -1
    try:
        store = DeletionStore(s.database_url)
        running = [(row["project"], row["subject_kind"], row["subject"], float(row["until"]))
                   for row in store.suppressing()]
        suppress.resync(r, s.redis_key_prefix, running)
        requests = store.open_requests()
        for req in [q for q in requests if q["state"] == "suppressing"]:
            _hot(store, req)
        storage([q for q in store.open_requests() if q["state"] == "deleted_hot"], store)
        for req in [q for q in store.open_requests() if q["state"] == "deleted_storage"]:
            _notify(store, req)
        for req in [q for q in store.open_requests() if q["state"] == "downstream_notified"]:
            _verify(store, req)
        return len(store.open_requests())
    finally:
        lock.release()


# -- who: the person's sessions ---------------------------------------------------------------------
def _sessions(ch: ClickHouse, req: dict) -> dict[str, int]:
    """``{session_id: highest version known}`` of the request's person."""
    project, kind, subject = req["project"], req["subject_kind"], req["subject"]
    sids = set(req["sessions"] or {})
    if kind == "session_id":
        sids.add(subject)
    else:
        db = ident(ch.database)
        rows = ch.execute(f"SELECT DISTINCT session_id FROM {db}.events WHERE project = %(p)s "  # noqa: S608 -- identifier via ident()
                          "AND anonymous_id = %(a)s", {"p": project, "a": subject})
        sids.update(str(r[0]) for r in rows)
        for _, batch in _poison_batches(project):
            sids.update(e["session_id"] for e in batch.get("events", []) if e.get("anonymous_id") == subject)
    versions = dict.fromkeys(sids, 0)
    if sids:
        db = ident(ch.database)
        for sid, v in ch.execute(f"SELECT session_id, max(version) FROM {db}.session_batches "  # noqa: S608 -- identifier via ident()
                                 "WHERE project = %(p)s AND has(%(s)s, session_id) GROUP BY session_id",
                                 {"p": project, "s": sorted(sids)}):
            versions[str(sid)] = max(versions[str(sid)], int(v))
    store = resources.session_store()
    for sid in sids:
        k = store.keys(project, sid)
        live, ver = store.r.hget(k["live"], "version"), store.r.get(k["ver"])
        versions[sid] = max(versions[sid], int(live or 0), int(ver or 0), int((req["sessions"] or {}).get(sid, 0)))
    return versions


# -- Redis and dead letters ---------------------------------------------------------------------------
def _redis_state(store: SessionStore, project: str, versions: dict[str, int], delete: bool) -> dict[str, int]:
    """Count (and with ``delete`` remove) the person's Redis state, per kind."""
    r = store.r
    due = parked.due_index()
    counts = {"session_state": 0, "frozen_snapshots": 0, "parked_retries": 0}
    for sid, top in versions.items():
        k = store.keys(project, sid)
        member = f"{project}{suppress.SEP}{sid}"
        finals = [store._final(project, sid, v) for v in range(1, top + 1)]
        outbox = [f"{member}{suppress.SEP}{v}" for v in range(1, top + 1)]
        parked_members = [parked.member(project, sid, v) for v in range(1, top + 1)]
        pipe = r.pipeline(transaction=False)
        pipe.exists(k["live"])
        pipe.exists(k["ver"])
        pipe.zscore(k["deadline"], member)
        for f in finals:
            pipe.exists(f)
        for m in parked_members:
            pipe.zscore(due.zset, m)
        found = pipe.execute()
        counts["session_state"] += int(found[0]) + int(found[1]) + (found[2] is not None)
        counts["frozen_snapshots"] += sum(int(x) for x in found[3:3 + len(finals)])
        counts["parked_retries"] += sum(x is not None for x in found[3 + len(finals):])
        if not delete:
            continue
        pipe = r.pipeline(transaction=True)  # every key of a session shares its bucket's hash tag
        pipe.delete(k["live"], k["ver"], *finals)
        pipe.zrem(k["deadline"], member)
        if outbox:
            pipe.zrem(k["outbox"], *outbox)
        for v in range(1, top + 1):  # keeps the reconciliation off what ClickHouse still holds
            pipe.set(store._done(project, sid, v), "deleted", ex=store.tombstone_ttl)
        pipe.execute()
        if parked_members:
            due.done(parked_members)
    return counts


def _poison_batches(project: str) -> list[tuple[int, dict]]:
    with postgres.cursor(resources.settings().database_url) as cur:
        cur.execute("SELECT id, payload->'batch' AS batch FROM dead_letters WHERE kind = 'poison_batch' "
                    "AND payload->'batch'->>'project' = %s", (project,))
        return [(int(row["id"]), row["batch"]) for row in cur.fetchall()]


def _dead_letters(req: dict, versions: dict[str, int], delete: bool) -> int:
    """Count (and with ``delete`` remove) the person's dead letters: undeliverable forwards of
    their sessions, and dead-lettered batches holding their events (other people's events stay)."""
    project, sids = req["project"], set(versions)
    anon = req["subject"] if req["subject_kind"] == "anonymous_id" else None
    prefixes = [f"{project}:{sid}:" for sid in sorted(sids)]
    n = 0
    with postgres.cursor(resources.settings().database_url) as cur:
        cur.execute("SELECT id FROM dead_letters WHERE kind = 'undeliverable_forward' AND EXISTS (SELECT 1 FROM "
                    "unnest(%s::text[]) AS pre WHERE left(ref, length(pre)) = pre "
                    "AND substr(ref, length(pre) + 1) ~ '^[0-9]+$')", (prefixes,))
        forwards = [int(row["id"]) for row in cur.fetchall()]
        n += len(forwards)
        if delete and forwards:
            cur.execute("DELETE FROM dead_letters WHERE id = ANY(%s)", (forwards,))
        for dl_id, batch in _poison_batches(project):
            events = batch.get("events", [])
            kept = [e for e in events
                    if e.get("session_id") not in sids and (anon is None or e.get("anonymous_id") != anon)]
            if len(kept) == len(events):
                continue
            n += 1
            if not delete:
                continue
            if kept:
                cur.execute("UPDATE dead_letters SET payload = jsonb_set(payload, '{batch,events}', %s) WHERE id = %s",
                            (psycopg2.extras.Json(kept), dl_id))
            else:
                cur.execute("DELETE FROM dead_letters WHERE id = %s", (dl_id,))
    return n


# -- ClickHouse -----------------------------------------------------------------------------------------
def _condition(table: str, req: dict, versions: dict[str, int], n: int) -> tuple[str, dict[str, Any]]:
    """The WHERE of one request on ``table`` (placeholders suffixed by ``n``)."""
    params: dict[str, Any] = {f"p{n}": req["project"], f"s{n}": sorted(versions) or [NO_SESSION]}
    cond = f"has(%(s{n})s, session_id)"
    if table == "events" and req["subject_kind"] == "anonymous_id":
        cond = f"({cond} OR anonymous_id = %(a{n})s)"
        params[f"a{n}"] = req["subject"]
    return f"(project = %(p{n})s AND {cond})", params


def _counts(ch: ClickHouse, req: dict, versions: dict[str, int]) -> dict[str, int]:
    db = ident(ch.database)
    out = {}
    for table in TABLES:
        where, params = _condition(table, req, versions, 0)
        out[table] = int(ch.execute(f"SELECT count() FROM {db}.{table} WHERE {where}", params)[0][0])  # noqa: S608 -- identifiers via ident(), values bound
    return out


def _running_mutations(ch: ClickHouse) -> int:
    """Observer's unfinished mutations on its tables (on a cluster: every shard's local tables)."""
    cluster = resources.settings().clickhouse_cluster
    tables = [t + LOCAL_SUFFIX for t in TABLES] if cluster else list(TABLES)
    source = f"cluster({ident(cluster)}, system, mutations)" if cluster else "system.mutations"
    rows = ch.execute(f"SELECT count() FROM {source} WHERE database = %(d)s AND has(%(t)s, table) "  # noqa: S608 -- identifier via ident()
                      "AND is_done = 0", {"d": ch.database, "t": tables})
    return int(rows[0][0])


def storage(requests: list[dict], store: DeletionStore) -> int:
    """Delete the rows of every request waiting at ``deleted_hot`` with one mutation per table (when
    none of Observer's is still running), and move them on once the mutations finished; returns
    how many moved."""
    if not requests:
        return 0
    s = resources.settings()
    ch = resources.clickhouse()
    db, cluster = ident(ch.database), s.clickhouse_cluster
    fresh = [q for q in requests if "storage_issued" not in q["stages"]]
    if fresh and not _running_mutations(ch):
        for table in TABLES:
            parts, params = [], {}
            for n, req in enumerate(fresh):
                cond, p = _condition(table, req, req["sessions"], n)
                parts.append(cond)
                params.update(p)
            target = f"{db}.{ident(table + LOCAL_SUFFIX)} ON CLUSTER {ident(cluster)}" if cluster else f"{db}.{table}"
            ch.execute(f"ALTER TABLE {target} DELETE WHERE {' OR '.join(parts)}", params)
        issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for req in fresh:
            store.note(req["id"], storage_issued=issued)
            req["stages"]["storage_issued"] = issued
        metrics.DELETION_MUTATIONS.inc(len(TABLES))
        log.info("deletion mutations issued", extra={"requests": [q["id"] for q in fresh]})
    deadline = time.monotonic() + MUTATION_WAIT_S
    while _running_mutations(ch) and time.monotonic() < deadline:
        time.sleep(0.5)
    if _running_mutations(ch):
        return 0
    moved = 0
    for req in requests:
        if "storage_issued" in req["stages"]:
            store.advance(req["id"], "deleted_storage")
            moved += 1
    return moved


# -- stages -----------------------------------------------------------------------------------------------
def _hot(store: DeletionStore, req: dict) -> None:
    ch = resources.clickhouse()
    versions = _sessions(ch, req)
    sessions = resources.session_store()
    project = req["project"]
    ch_counts = _counts(ch, req, versions)
    redis_counts = _redis_state(sessions, project, versions, delete=True)
    dead = _dead_letters(req, versions, delete=True)
    prior = req["counts"] or {}
    counts = {"clickhouse": _add(prior.get("clickhouse"), ch_counts), "redis": _add(prior.get("redis"), redis_counts),
              "dead_letters": int(prior.get("dead_letters", 0)) + dead}
    store.advance(req["id"], "deleted_hot", sessions=versions, counts=counts)


def _add(before: dict | None, now: dict[str, int]) -> dict[str, int]:
    return {k: int((before or {}).get(k, 0)) + v for k, v in now.items()}


def notice(req: dict) -> dict:
    """The body of the deletion notice UFSE receives (schema ``UfseDeletion`` in the OpenAPI file)."""
    return {"deletion": {"id": int(req["id"]), "project": req["project"],
                         "subject": {req["subject_kind"]: req["subject"]},
                         "session_ids": sorted(req["sessions"] or {}),
                         "requested_at": req["created_at"].astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
                         + "Z"}}


def _notify(store: DeletionStore, req: dict) -> None:
    dest = destinations.for_project(req["project"])  # where the project's sessions go
    if dest is None:
        store.note(req["id"], notice="not sent: UFSE_URL is not set")
        store.advance(req["id"], "downstream_notified")
        return
    body = json.dumps(notice(req), separators=(",", ":")).encode()
    result = destinations.client_for(dest).deliver(body, msg_id=f"deletion:{req['id']}",
                                                   request_id=f"deletion-{req['id']}")
    if result.outcome == "delivered":
        store.note(req["id"], notice=f"HTTP {result.status}")
        store.advance(req["id"], "downstream_notified")
    else:  # tried again on the next run; the status shows why it waits
        store.note(req["id"], error=f"deletion notice not delivered: {result.error}")


def remaining(req: dict) -> dict[str, Any]:
    """What is left of the request's person in every store (each 0 once deleted)."""
    versions = cast(dict[str, int], req["sessions"] or {})
    ch = resources.clickhouse()
    return {"clickhouse": _counts(ch, req, versions),
            "redis": _redis_state(resources.session_store(), req["project"], versions, delete=False),
            "dead_letters": _dead_letters(req, versions, delete=False)}


def _verify(store: DeletionStore, req: dict) -> None:
    ch = resources.clickhouse()
    if _running_mutations(ch):
        return
    left = remaining(req)
    total = sum(left["clickhouse"].values()) + sum(left["redis"].values()) + left["dead_letters"]
    checked = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if total == 0:
        store.advance(req["id"], "verified", verification={"checked_at": checked, "mutations_done": True,
                                                           "remaining": left})
        metrics.DELETIONS_VERIFIED.inc()
        return
    rounds = int(req["stages"].get("rounds", 1))
    log.warning("deletion found data after deleting it", extra={"request": req["id"], "remaining": left})
    if rounds >= MAX_ROUNDS:
        store.note(req["id"], error=f"data left after {rounds} rounds: {json.dumps(left)}")
        return
    store.note(req["id"], error=f"found {total} after round {rounds}; deleting again", rounds=rounds + 1)
    store.advance(req["id"], "suppressing")


def enqueue(celery: Any) -> None:
    """Ask a worker for a run now (beat asks every minute anyway)."""
    from app.names import ROUTES, TaskName

    celery.send_task(TaskName.MAINTENANCE_DELETIONS, queue=ROUTES[TaskName.MAINTENANCE_DELETIONS].value)

