"""The one way tooling and tests make an API key: the app's own KeyStore, in-process.

``flask --app app keys create`` runs the same code; calling it here saves a CLI start per stack.
"""
from __future__ import annotations

from collections.abc import Iterable


def create_key(database_url: str, project: str, *, origins: Iterable[str] = (), rate_limit: str | None = None) -> str:
    """A new publishable key for ``project``; the pool is closed after, so a harness never holds
    a PostgreSQL connection across a server stop (only this URL's pool: another stack may be
    creating its key in another thread at the same moment)."""
    from app.keys.store import KeyStore
    from app.storage import postgres

    try:
        return KeyStore(database_url).create(project, origins=list(origins), rate_limit=rate_limit)[1]
    finally:
        postgres.close_pool(database_url)
