"""The loss ledger: what each stage did with a project's events, per minute, on the sessions Redis.

Each stage counts where it acts, bucketed by the minute its events were **received** (the batch's
``received_at``), so that one window of the report follows the same events through every stage:

  ingest (web)        received, accepted, suppressed, rate_limited, rejected:<code>,
                      client:<reason> (the SDKs' own drops, from client reports; bucketed by the
                      minute the report arrived)
  events (worker)     duplicates (events a resent batch carried that another batch owns)
  sessions (beat)     finalized: counted by the claim script itself, with the claim, in each session
                      bucket's ``claims`` hash (bucketed by the minute of the claim; ``read_claims``)

What is stored and delivered is read from the stores themselves (ClickHouse's ``events`` and
``sessions``; Redis' outbox, due index and backlogs) by app/accounting/report.py, so a stage
whose output is lost shows as a hole, not as a figure someone forgot to write.

Counting costs no round trip on the request path: each process adds to a dict, and one thread
per process writes it every second, one script call per project (and at exit). A process killed
with -9 loses at most its last second of counts. A write that failed is retried under the same
flush id, which the script applies once: a Redis that was paused (not lost) may have run the
first try after the client gave up on it, and HINCRBY is not idempotent.
"""
from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
from collections import defaultdict
from typing import Any

from app.storage import lua, redis_clients, redis_keys

log = logging.getLogger(__name__)

FLUSH_S = 1.0
# Kept for a week and a day: ``report --since`` reaches back at most 7 days.
TTL_S = 8 * 86400
MAX_SINCE_S = 7 * 86400


def minute(ms: int) -> int:
    """The minute bucket (epoch minutes) of an epoch-milliseconds time."""
    return int(ms) // 60_000


class Ledger:
    """The counting side, one per process and sessions Redis."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self.redis_url, self.prefix = redis_url, prefix
        self._counts: dict[tuple[str, int], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self._lock = threading.Lock()
        self._pid = 0
        self._stop = threading.Event()
        # (project, flush id, buckets) of writes that failed: retried with their id
        self._pending: list[tuple[str, str, list[tuple[int, dict[str, int]]]]] = []
        self._script: dict[str, Any] = {}

    def add(self, project: str, at_ms: int, counts: dict[str, int]) -> None:
        """Count ``counts`` (field -> n) for ``project`` in the minute of ``at_ms``."""
        if self._pid != os.getpid():
            self._start()
        with self._lock:
            bucket = self._counts[(project, minute(at_ms))]
            for field, n in counts.items():
                if n:
                    bucket[field] += int(n)

    def flush(self) -> int:
        """Write what was counted; returns how many writes went. Each project's new counts go in one
        script call under a new flush id (``ledger_add.lua``); a write that failed is kept with its
        id and retried as it was (never merged with newer counts), and a retry of a call that did
        run adds nothing."""
        with self._lock:
            taken, self._counts = self._counts, defaultdict(lambda: defaultdict(int))
            fresh: dict[str, list[tuple[int, dict[str, int]]]] = {}
            for (project, m), fields in taken.items():
                fresh.setdefault(project, []).append((m, dict(fields)))
            writes = self._pending + [(p, uuid.uuid4().hex, b) for p, b in fresh.items()]
            self._pending = []
        written = 0
        for project, flush_id, buckets in writes:
            try:
                self._write(project, flush_id, buckets)
                written += 1
            except Exception as exc:  # the ledger must never break the stage that counts
                log.warning("ledger flush failed; kept for the next one", extra={"error": str(exc)[:200]})
                with self._lock:
                    self._pending.append((project, flush_id, buckets))
        return written

    def _write(self, project: str, flush_id: str, buckets: list[tuple[int, dict[str, int]]]) -> None:
        name = project
        r = redis_clients.client(self.redis_url)
        script = self._script.get(self.redis_url)
        if script is None:
            script = self._script[self.redis_url] = r.register_script(lua.load(__file__, "ledger_add"))
        keys = [redis_keys.ledger_flush(self.prefix, name, flush_id)]
        args: list = [TTL_S]
        for m, fields in buckets:
            key = redis_keys.ledger(self.prefix, name, m)
            if key not in keys:
                keys.append(key)
            for field, n in fields.items():
                args += [keys.index(key) + 1, field, int(n)]
        script(keys=keys, args=args)

    def _start(self) -> None:
        # After a fork the parent's thread and counts are not this process's.
        self._pid = os.getpid()
        self._counts = defaultdict(lambda: defaultdict(int))
        self._pending = []
        self._script = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        threading.Thread(target=self._loop, name="ledger-flush", daemon=True).start()
        atexit.register(self.flush)

    def _loop(self) -> None:
        from app.accounting.tail import tails

        watched = tails(self.redis_url, self.prefix)
        while True:
            try:  # the thread outlives any one failure: it is the process's only writer of counts
                watched.refresh()
            except Exception as exc:  # e.g. redis-py's AttributeError on a connection closed under it
                log.warning("tail registrations not read", extra={"error": f"{type(exc).__name__}: {exc}"[:200]})
            if self._stop.wait(FLUSH_S):
                return
            try:
                self.flush()
            except Exception as exc:
                log.warning("ledger flush failed", extra={"error": f"{type(exc).__name__}: {exc}"[:200]})


_ledgers: dict[tuple[str, str], Ledger] = {}


def ledger(redis_url: str, prefix: str) -> Ledger:
    """This process's ledger for a sessions Redis and key prefix."""
    key = (redis_url, prefix)
    if key not in _ledgers:
        _ledgers[key] = Ledger(redis_url, prefix)
    return _ledgers[key]


def read(redis_url: str, prefix: str, project: str, since_ms: int, until_ms: int) -> dict[str, int]:
    """Sum every field of ``project``'s buckets from ``since_ms`` to ``until_ms`` (whole minutes)."""
    r = redis_clients.client(redis_url)
    pipe = r.pipeline(transaction=False)
    minutes = range(minute(since_ms), minute(until_ms) + 1)
    for m in minutes:
        pipe.hgetall(redis_keys.ledger(prefix, project, m))
    total: dict[str, int] = defaultdict(int)
    for fields in pipe.execute():
        for field, n in (fields or {}).items():
            total[str(field)] += int(n)
    return dict(total)


def read_claims(redis_url: str, prefix: str, project: str, since_ms: int, until_ms: int) -> int:
    """Versions of ``project`` the claim froze from ``since_ms`` to ``until_ms`` (whole minutes), summed
    over the session buckets' ``claims`` hashes, which the claim script writes with each claim."""
    from app.sessions.store import BUCKETS

    first, last = minute(since_ms), minute(until_ms)
    r = redis_clients.client(redis_url)
    pipe = r.pipeline(transaction=False)
    for b in range(BUCKETS):
        for day in range(int(since_ms) // 86_400_000, int(until_ms) // 86_400_000 + 1):
            pipe.hgetall(redis_keys.session_claims(prefix, b, project, day))
    return sum(int(n) for fields in pipe.execute() for m, n in (fields or {}).items() if first <= int(m) <= last)


def wait_flushed() -> None:
    """Write every ledger of this process now (tests, a CLI before it reads)."""
    for led in list(_ledgers.values()):
        led.flush()


def now_ms() -> int:
    return int(time.time() * 1000)
