"""Reconciliation: acknowledged ids against ClickHouse (uniqExact / distinct ids) and against
what the UFSE sink received; repeated deliveries; broker restores; dead letters."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter, defaultdict

RESTORE_MSG = "broker restored unacked messages"


def stored_ids(rig) -> set | None:
    """Distinct event ids in the case's ClickHouse database (None when it does not answer)."""
    if rig.chdb:
        return None  # only the owner worker may open chDB: read after the stack stopped
    from clickhouse_driver import Client

    try:
        client = Client.from_url(rig.ch_url + "?connect_timeout=2&send_receive_timeout=10")
        try:
            # the database name is the rig's own (faults_<tag>), never input
            return {r[0] for r in client.execute(f"SELECT DISTINCT event_id FROM {rig.ch_db}.events")}  # noqa: S608
        finally:
            client.disconnect()
    except Exception:  # server stopped or restarting: not stored yet, as far as we know
        return None


def chdb_stored_ids(rig) -> set:
    """Distinct event ids in the case's chDB directory, read in a child process (after stop)."""
    code = ("import json,sys; from chdb import session; s = session.Session(sys.argv[1]); "
            "r = s.query('SELECT DISTINCT event_id FROM observer.events', 'JSONCompact'); "
            "print(json.dumps([row[0] for row in json.loads(r.bytes() or b'{\"data\":[]}')['data']]))")
    out = subprocess.run([sys.executable, "-c", code, str(rig.dir / "chdb")], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    return set(json.loads(out))


def forwarded_ids(deliveries: list[dict]) -> set:
    """Event ids inside every delivery UFSE answered 200."""
    out = set()
    for d in deliveries:
        if d["status"] == 200 and isinstance(d.get("body"), dict):
            out.update(e["event_id"] for e in d["body"].get("events") or [])
    return out


def repeats(deliveries: list[dict]) -> tuple[int, int]:
    """(extra 200 deliveries of an already delivered webhook-id, ids delivered with differing content)."""
    seen: dict[str, list] = defaultdict(list)
    for d in deliveries:
        if d["status"] == 200 and isinstance(d.get("body"), dict):
            ids = tuple(sorted(e["event_id"] for e in d["body"].get("events") or []))
            seen[d["headers"].get("webhook-id")].append(ids)
    extra = sum(len(v) - 1 for v in seen.values())
    differing = sum(1 for v in seen.values() if len(set(v)) > 1)
    return extra, differing


def restores(rig) -> int:
    """Sum of ``count`` over the workers' "broker restored unacked messages" log lines."""
    total = 0
    for p in rig.stack.procs.values():
        for line in p.log_text().splitlines():
            if RESTORE_MSG not in line:
                continue
            try:
                total += int(json.loads(line.split(" | ", 1)[1]).get("count", 0))
            except (ValueError, IndexError):
                total += 1
    return total


def dead_letters(rig) -> Counter:
    """Pending dead letters by kind."""
    import psycopg2

    conn = psycopg2.connect(rig.database_url, connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT kind, count(*) FROM dead_letters WHERE replayed_at IS NULL GROUP BY kind")
            return Counter(dict(cur.fetchall()))
    finally:
        conn.close()


def wait_stored(rig, expected: set, since: float, bound: float) -> tuple[float | None, set]:
    """Poll until ``expected`` is stored; (seconds since ``since`` or None, stored ids)."""
    stored: set = set()
    while True:
        got = stored_ids(rig)
        if got is not None:
            stored = got
            if expected <= stored:
                return time.monotonic() - since, stored
        if time.monotonic() - since > bound:
            return None, stored
        time.sleep(0.5)


def wait_forwarded(rig, expected: set, bound: float) -> tuple[set, float | None]:
    """Poll the sinks until ``expected`` was delivered with a 200; (ids, monotonic time done or None)."""
    deadline = time.monotonic() + bound
    while True:
        got = forwarded_ids(rig.deliveries())
        if expected <= got:
            return got, time.monotonic()
        if time.monotonic() > deadline:
            return got, None
        time.sleep(0.5)
