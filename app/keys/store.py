"""API keys and projects in PostgreSQL."""
from __future__ import annotations

import psycopg2.extras

from app.keys import model
from app.storage import postgres


class KeyStore:
    """CRUD for keys; every query parameterized."""

    def __init__(self, database_url: str, maxconn: int = 10) -> None:
        self.url = database_url
        self.maxconn = maxconn

    def create(self, project: str, origins: list[str] | None = None, rate_limit: str | None = None) -> tuple[int, str]:
        """Create a key (and its project if new); returns (id, plaintext key).

        Each origin is normalized as browsers send it (``model.normalize_origin``); one that is
        not an origin raises ValueError naming it."""
        if not model.PROJECT_SHAPE.match(project):
            raise ValueError("project: 1-64 of [A-Za-z0-9._-], starting with a letter or digit")
        return self._insert(project, [model.normalize_origin(o) for o in origins or []], rate_limit)

    def _insert(self, project: str, origins: list[str], rate_limit: str | None) -> tuple[int, str]:
        key = model.generate()
        with postgres.cursor(self.url, self.maxconn) as cur:
            cur.execute("INSERT INTO projects (name) VALUES (%s) ON CONFLICT DO NOTHING", (project,))
            cur.execute(
                "INSERT INTO api_keys (project, prefix, key_hash, origins, rate_limit) VALUES (%s, %s, %s, %s, %s) "
                "RETURNING id",
                (project, model.display_prefix(key), model.digest(key), list(dict.fromkeys(origins)), rate_limit),
            )
            return int(postgres.returned(cur)["id"]), key

    def lookup(self, key: str) -> model.KeyInfo | None:
        """The valid key matching ``key``, or None (unknown, revoked, or past its grace)."""
        if not model.well_formed(key):
            return None
        wanted = model.digest(key)
        with postgres.cursor(self.url, self.maxconn) as cur:
            cur.execute(
                "SELECT id, project, key_hash, origins, rate_limit FROM api_keys "
                "WHERE key_hash = %s AND (revoked_at IS NULL OR revoked_at > now())",
                (wanted,),
            )
            row = cur.fetchone()
        if row is None or not model.same_digest(bytes(row["key_hash"]), wanted):
            return None
        # Keys created before origins were normalized may hold "https://Shop.test/": compare
        # what a browser would send for each.
        origins = tuple(dict.fromkeys(model.origin_or_raw(o) for o in row["origins"] or ()))
        return model.KeyInfo(row["id"], row["project"], origins, row["rate_limit"])

    def list(self) -> list[dict]:
        """Every key (without secrets)."""
        with postgres.cursor(self.url, self.maxconn) as cur:
            cur.execute("SELECT id, project, prefix, origins, rate_limit, created_at, revoked_at "
                        "FROM api_keys ORDER BY id")
            return list(cur.fetchall())

    def _resolve(self, cur: psycopg2.extras.RealDictCursor, key_or_id: str) -> dict:
        if key_or_id.isdigit():
            cur.execute("SELECT * FROM api_keys WHERE id = %s", (int(key_or_id),))
        else:
            cur.execute("SELECT * FROM api_keys WHERE key_hash = %s", (model.digest(key_or_id),))
        row = cur.fetchone()
        if row is None:
            raise LookupError("no such key")
        return row

    def revoke(self, key_or_id: str, grace_s: int = 0) -> int:
        """Revoke now (or after ``grace_s``); returns the key id."""
        with postgres.cursor(self.url, self.maxconn) as cur:
            row = self._resolve(cur, key_or_id)
            cur.execute(
                "UPDATE api_keys SET revoked_at = LEAST(COALESCE(revoked_at, 'infinity'), "
                "now() + make_interval(secs => %s)) WHERE id = %s",
                (grace_s, row["id"]),
            )
            return int(row["id"])

    def rotate(self, key_or_id: str, grace_s: int) -> tuple[int, str]:
        """New key with the same project/origins/limit; the old one stays valid for ``grace_s``."""
        with postgres.cursor(self.url, self.maxconn) as cur:
            row = self._resolve(cur, key_or_id)
        # An origin stored before they were checked is carried over (normalized where it can be),
        # not refused: rotating must not fail on a key that works.
        new_id, key = self._insert(row["project"], [model.origin_or_raw(o) for o in row["origins"] or []],
                                   row["rate_limit"])
        self.revoke(str(row["id"]), grace_s)
        return new_id, key
