"""The ``deletion_requests`` and ``deletion_audit`` tables (PostgreSQL migration 3)."""
from __future__ import annotations

import datetime as dt
import json
from typing import Any

import psycopg2.extras

from app.storage import postgres

KINDS = ("anonymous_id", "session_id")
STAGES = ("suppressing", "deleted_hot", "deleted_storage", "downstream_notified", "verified")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class DeletionStore:
    """Deletion requests of one PostgreSQL database."""

    def __init__(self, database_url: str) -> None:
        self.url = database_url

    def create(self, project: str, kind: str, subject: str, requested_by: str, suppress_s: int) -> int:
        """Record a request (state ``suppressing``) and its audit row; returns its id."""
        if kind not in KINDS:
            raise ValueError(f"unknown subject kind {kind!r}")
        stages = {"suppressing": _now()}
        with postgres.cursor(self.url) as cur:
            cur.execute("INSERT INTO deletion_requests (project, subject_kind, subject, requested_by, stages, "
                        "suppress_until) VALUES (%s, %s, %s, %s, %s, now() + make_interval(secs => %s)) RETURNING id",
                        (project, kind, subject, requested_by, psycopg2.extras.Json(stages), suppress_s))
            req = int(postgres.returned(cur)["id"])
            cur.execute("INSERT INTO deletion_audit (request, action, actor, detail) VALUES (%s, 'requested', %s, %s)",
                        (req, requested_by, psycopg2.extras.Json({"project": project, kind: subject})))
        return req

    def get(self, req: int) -> dict | None:
        """One request as a dict (None when unknown)."""
        with postgres.cursor(self.url) as cur:
            cur.execute("SELECT * FROM deletion_requests WHERE id = %s", (req,))
            return cur.fetchone()

    def open_requests(self, limit: int = 100) -> list[dict]:
        """Requests not yet verified, oldest first."""
        with postgres.cursor(self.url) as cur:
            cur.execute("SELECT * FROM deletion_requests WHERE state <> 'verified' ORDER BY id LIMIT %s", (limit,))
            return list(cur.fetchall())

    def suppressing(self) -> list[dict]:
        """Every request whose ingest suppression still runs: project, subject, suppress_until (epoch s)."""
        with postgres.cursor(self.url) as cur:
            cur.execute("SELECT project, subject_kind, subject, extract(epoch FROM suppress_until) AS until "
                        "FROM deletion_requests WHERE suppress_until > now()")
            return list(cur.fetchall())

    def advance(self, req: int, stage: str, *, sessions: dict | None = None, counts: dict | None = None,
                verification: dict | None = None, actor: str = "maintenance.deletions") -> None:
        """Enter ``stage`` (timestamped), merge what it found, clear the error, and audit it."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}")
        sets = ["state = %s", "stages = stages || %s", "error = NULL"]
        args: list[Any] = [stage, psycopg2.extras.Json({stage: _now()})]
        if sessions is not None:
            sets.append("sessions = %s")
            args.append(psycopg2.extras.Json(sessions))
        if counts is not None:
            sets.append("counts = counts || %s")
            args.append(psycopg2.extras.Json(counts))
        if verification is not None:
            sets.append("verification = %s")
            args.append(psycopg2.extras.Json(verification))
        with postgres.cursor(self.url) as cur:
            # Only fixed clauses are joined into the text; every value is a bound parameter.
            cur.execute(f"UPDATE deletion_requests SET {', '.join(sets)} WHERE id = %s", (*args, req))  # noqa: S608
            cur.execute("INSERT INTO deletion_audit (request, action, actor, detail) VALUES (%s, %s, %s, %s)",
                        (req, stage, actor, psycopg2.extras.Json(counts or verification or {})))

    def note(self, req: int, error: str | None = None, **detail: Any) -> None:
        """Keep the stage; record why it did not move (``error``) or a detail (``stages`` keys)."""
        with postgres.cursor(self.url) as cur:
            if detail:
                cur.execute("UPDATE deletion_requests SET stages = stages || %s WHERE id = %s",
                            (psycopg2.extras.Json(detail), req))
            if error is not None:
                cur.execute("UPDATE deletion_requests SET error = %s WHERE id = %s", (error[:2000], req))

    def audit(self, req: int) -> list[dict]:
        """The audit rows of one request, oldest first."""
        with postgres.cursor(self.url) as cur:
            cur.execute("SELECT action, actor, detail, at FROM deletion_audit WHERE request = %s ORDER BY id", (req,))
            return list(cur.fetchall())


def status(row: dict, audit: list[dict]) -> dict:
    """The receipt ``data status`` prints."""
    return {
        "id": int(row["id"]), "project": row["project"], "subject": {row["subject_kind"]: row["subject"]},
        "requested_by": row["requested_by"], "requested_at": _iso(row["created_at"]),
        "suppressed_until": _iso(row["suppress_until"]), "state": row["state"],
        "stages": {s: row["stages"][s] for s in STAGES if s in row["stages"]},
        "sessions": len(row["sessions"] or {}), "counts": row["counts"] or {},
        "verification": row["verification"], "error": row["error"],
        "audit": [{"action": a["action"], "actor": a["actor"], "at": _iso(a["at"])} for a in audit],
    }


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def dumps(doc: dict) -> str:
    """Indented JSON for the CLI."""
    return json.dumps(doc, indent=2, default=str)
