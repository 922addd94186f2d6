"""Dead letters in PostgreSQL: undeliverable forwards and poison batches, replayable."""
from __future__ import annotations

import builtins
import json

import psycopg2.extras

from app.storage import postgres

KINDS = ("undeliverable_forward", "poison_batch")


class DeadLetters:
    """The ``dead_letters`` table."""

    def __init__(self, database_url: str) -> None:
        self.url = database_url

    def add(self, kind: str, ref: str, payload: dict, error: str, attempts: int, request_id: str | None = None) -> int:
        """Store a dead letter; returns its id."""
        if kind not in KINDS:
            raise ValueError(f"unknown dead-letter kind {kind!r}")
        with postgres.cursor(self.url) as cur:
            cur.execute(
                "INSERT INTO dead_letters (kind, ref, payload, error, attempts, request_id) VALUES (%s, %s, %s, %s, "
                "%s, %s) RETURNING id",
                (kind, ref, psycopg2.extras.Json(payload), error[:2000], attempts, request_id),
            )
            return int(postgres.returned(cur)["id"])

    def get(self, dl_id: int) -> dict | None:
        """One dead letter by id."""
        with postgres.cursor(self.url) as cur:
            cur.execute("SELECT * FROM dead_letters WHERE id = %s", (dl_id,))
            return cur.fetchone()

    def list(self, kind: str | None = None, include_replayed: bool = False, limit: int = 100) -> list[dict]:
        """Dead letters, oldest first."""
        clauses, args = [], []
        if kind:
            clauses.append("kind = %s")
            args.append(kind)
        if not include_replayed:
            clauses.append("replayed_at IS NULL")
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        with postgres.cursor(self.url) as cur:
            # Only fixed clauses are joined into the text; every value is a bound parameter.
            cur.execute(f"SELECT id, kind, ref, error, attempts, request_id, created_at, replayed_at "  # noqa: S608
                        f"FROM dead_letters {where} ORDER BY id LIMIT %s", (*args, limit))
            return list(cur.fetchall())

    def record_failure(self, dl_id: int, error: str) -> None:
        """A replay failed again: keep the row pending with the new error."""
        with postgres.cursor(self.url) as cur:
            cur.execute("UPDATE dead_letters SET error = %s, attempts = attempts + 1, replayed_at = NULL WHERE id = %s",
                        (error[:2000], dl_id))

    def mark_replayed(self, dl_id: int) -> None:
        """The dead letter was delivered (or re-published)."""
        with postgres.cursor(self.url) as cur:
            cur.execute("UPDATE dead_letters SET replayed_at = now() WHERE id = %s", (dl_id,))

    def purge(self, ids: builtins.list[int] | None = None, replayed_only: bool = False) -> int:
        """Delete dead letters (given ids, or all / all replayed); returns the count."""
        with postgres.cursor(self.url) as cur:
            if ids:
                cur.execute("DELETE FROM dead_letters WHERE id = ANY(%s)", (ids,))
            elif replayed_only:
                cur.execute("DELETE FROM dead_letters WHERE replayed_at IS NOT NULL")
            else:
                cur.execute("DELETE FROM dead_letters")
            return cur.rowcount


def dumps(payload: dict) -> str:
    """Compact JSON for CLI output."""
    return json.dumps(payload, default=str, separators=(",", ":"))
