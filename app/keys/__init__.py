"""Publishable, write-only ingest keys: model, PostgreSQL store, TTL cache, CLI."""
