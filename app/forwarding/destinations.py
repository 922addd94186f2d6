"""Where a project's finished sessions go: its own destination, or ``UFSE_URL``.

A project destination is a row of ``destinations`` in PostgreSQL (set by ``flask --app app
destinations set``): its URL, its secrets and whether it is enabled. Each secret carries an
expiry: ``rotate`` puts a new secret first and gives the ones in use ``SECRET_ROTATION_OVERLAP``
more life, so during the overlap every attempt is signed with both and a receiver verifying with
either accepts it. A project without a row uses ``UFSE_URL`` (``UFSE_SECRET`` may list several
secrets, space-separated, for the same overlap), named ``default``.

Workers read a project's row at most every ``CACHE_S`` per process; a change (a rotation, a
disable, an enable) reaches every worker within that. When PostgreSQL does not answer, a row read
before keeps serving (a delivery must not fail because a settings table is away); with none, the
error goes to the forward task's storage path.

Each destination has its own circuit (Redis, named ``project:<p>`` or UFSE_URL's origin), retry
accounting, metrics label, and for a project destination the SSRF guard and the backlog it parks
deliveries in once disabled (app/forwarding/backlog.py).
"""
from __future__ import annotations

import base64
import json
import os
import secrets as secrets_mod
import time
from dataclasses import dataclass
from typing import Any

from app import resources
from app.forwarding.client import UfseClient
from app.forwarding.signing import SECRET_PREFIX, decode_secret
from app.forwarding.ssrf import Guard, check_reachable
from app.forwarding.url_redaction import origin, redacted_url
from app.keys.model import PROJECT_SHAPE
from app.storage import postgres

DEFAULT = "default"
CACHE_S = 5.0


@dataclass(frozen=True)
class Destination:
    """One resolved destination: what a delivery attempt needs."""

    name: str  # "default" (UFSE_URL) or the project
    url: str
    secrets: tuple[str, ...]  # every secret that signs now, newest first
    enabled: bool = True
    guarded: bool = False  # a project's destination goes through the SSRF guard

    @property
    def circuit_name(self) -> str:
        """The circuit's name: the project for its own destination, UFSE_URL's origin for the default."""
        return f"project:{self.name}" if self.guarded else (origin(self.url) or "ufse")

    @property
    def display_url(self) -> str:
        return redacted_url(self.url)


def new_secret() -> str:
    """A fresh ``whsec_`` secret (24 random bytes)."""
    return SECRET_PREFIX + base64.b64encode(secrets_mod.token_bytes(24)).decode()


def active(entries: list[dict[str, Any]], now: float) -> tuple[str, ...]:
    """The secrets that still sign at ``now``, newest first."""
    return tuple(e["secret"] for e in entries if e.get("expires_at") is None or float(e["expires_at"]) > now)


# ------------------------------------------------------------------ resolution (workers)
_cache: dict[str, tuple[float, Destination | None]] = {}
_clients: dict[tuple, UfseClient] = {}
_pid = 0


def _fresh() -> None:
    global _pid
    if _pid != os.getpid():  # a forked child keeps no parent's sockets or cached rows
        _cache.clear()
        _clients.clear()
        _pid = os.getpid()


def reset() -> None:
    """Forget cached rows and clients (tests, and after settings change)."""
    for c in _clients.values():
        c.close()
    _cache.clear()
    _clients.clear()


def reset_project(project: str) -> None:
    """Forget one project's cached row (this process changed it)."""
    _cache.pop(project, None)


def for_project(project: str, now: float | None = None) -> Destination | None:
    """The destination of ``project`` (None: no row and no UFSE_URL)."""
    _fresh()
    t = time.monotonic()
    hit = _cache.get(project)
    if hit and hit[0] > t and now is None:
        return hit[1]
    s = resources.settings()
    try:
        row = _row(s.database_url, project)
    except postgres.psycopg2.Error:
        if hit:
            return hit[1]
        raise
    wall = time.time() if now is None else now
    dest: Destination | None
    if row is not None:
        dest = Destination(project, row["url"], active(row["secrets"], wall), bool(row["enabled"]), guarded=True)
    elif s.ufse_url:
        dest = Destination(DEFAULT, s.ufse_url, tuple(s.ufse_secret.split()))
    else:
        dest = None
    # Cache only until the next secret expires, so an overlap ends on time.
    ends = [float(e["expires_at"]) for e in (row or {}).get("secrets", []) if e.get("expires_at")]
    expiry = min(ends or [wall + CACHE_S])
    _cache[project] = (t + max(0.0, min(CACHE_S, expiry - wall)), dest)
    return dest


def client_for(dest: Destination) -> UfseClient:
    """A pooled client per destination, URL and secrets (a rotation builds a new one)."""
    _fresh()
    key = (dest.url, dest.secrets, dest.guarded)
    if key not in _clients:
        s = resources.settings()
        guard = Guard(s.destinations_allowed_networks) if dest.guarded else None
        _clients[key] = UfseClient(dest.url, dest.secrets, timeout=s.ufse_timeout, guard=guard)
    return _clients[key]


def _row(database_url: str, project: str) -> dict[str, Any] | None:
    with postgres.cursor(database_url) as cur:
        cur.execute("SELECT url, secrets, enabled, disabled_at, disabled_reason FROM destinations WHERE project = %s",
                    (project,))
        row = cur.fetchone()
    return dict(row) if row else None


# ------------------------------------------------------------------ management (CLI)
class DestinationError(ValueError):
    """A destination cannot be set as asked (the message says why)."""


def set_destination(database_url: str, project: str, url: str, secret: str | None, *,
                    allowed_networks: tuple[str, ...] = (), check: bool = True) -> dict[str, Any]:
    """Create or replace ``project``'s destination; returns the row, with the secret it signs with
    and ``warning`` when the receiver did not answer. Refuses a URL the SSRF guard refuses."""
    if not PROJECT_SHAPE.match(project):
        raise DestinationError(f"not a project name: {project!r}")
    guard = Guard(allowed_networks)
    try:
        guard.check_url(url)
        warning = check_reachable(url, guard) if check else None
    except Exception as exc:  # RefusedAddress, ValueError: both are the operator's to fix
        raise DestinationError(f"refused {redacted_url(url)}: {exc}") from None
    secret = secret or new_secret()
    try:
        decode_secret(secret)
    except ValueError as exc:
        raise DestinationError(str(exc)) from None
    entries = [{"secret": secret, "created_at": time.time(), "expires_at": None}]
    with postgres.cursor(database_url) as cur:
        cur.execute("""INSERT INTO destinations (project, url, secrets) VALUES (%s, %s, %s)
                       ON CONFLICT (project) DO UPDATE SET url = EXCLUDED.url, secrets = EXCLUDED.secrets,
                           updated_at = now()""", (project, url, json.dumps(entries)))
    return {"project": project, "url": redacted_url(url), "secret": secret, "warning": warning}


def list_destinations(database_url: str, now: float | None = None) -> list[dict[str, Any]]:
    """Every project destination, its URL redacted and how many secrets sign now."""
    now = time.time() if now is None else now
    with postgres.cursor(database_url) as cur:
        cur.execute("SELECT project, url, secrets, enabled, disabled_at, disabled_reason, updated_at "
                    "FROM destinations ORDER BY project")
        rows = [dict(r) for r in cur.fetchall()]
    for r in rows:
        r["url"] = redacted_url(r["url"])
        entries = r.pop("secrets")
        r["secrets_signing"] = len(active(entries, now))
        ends = [float(e["expires_at"]) for e in entries if e.get("expires_at") and float(e["expires_at"]) > now]
        r["overlap_ends"] = min(ends) if ends else None
    return rows


def rotate(database_url: str, project: str, overlap_s: float, now: float | None = None) -> dict[str, Any]:
    """A new secret signs first; the ones signing now keep signing for ``overlap_s``."""
    now = time.time() if now is None else now
    fresh = new_secret()
    with postgres.cursor(database_url) as cur:
        cur.execute("SELECT secrets FROM destinations WHERE project = %s FOR UPDATE", (project,))
        row = cur.fetchone()
        if row is None:
            raise DestinationError(f"project {project} has no destination of its own")
        kept = [{**e, "expires_at": e.get("expires_at") or now + overlap_s}
                for e in row["secrets"] if e.get("expires_at") is None or float(e["expires_at"]) > now]
        entries = [{"secret": fresh, "created_at": now, "expires_at": None}, *kept]
        cur.execute("UPDATE destinations SET secrets = %s, updated_at = now() WHERE project = %s",
                    (json.dumps(entries), project))
    return {"project": project, "secret": fresh, "old_secrets_until": now + overlap_s, "signing": len(entries)}


def remove(database_url: str, project: str) -> bool:
    """Forget ``project``'s destination (it uses UFSE_URL from then on); False when it had none."""
    with postgres.cursor(database_url) as cur:
        cur.execute("DELETE FROM destinations WHERE project = %s", (project,))
        return bool(cur.rowcount)


def set_enabled(database_url: str, project: str, enabled: bool, reason: str = "") -> bool:
    """Enable or disable; True when the state changed (so a disable is logged and counted once)."""
    with postgres.cursor(database_url) as cur:
        cur.execute("UPDATE destinations SET enabled = %s, disabled_at = CASE WHEN %s THEN NULL ELSE now() END, "
                    "disabled_reason = %s, updated_at = now() WHERE project = %s AND enabled <> %s",
                    (enabled, enabled, None if enabled else reason[:500], project, enabled))
        return bool(cur.rowcount)
