"""Observer: frontend-observability ingest pipeline (web process and shared core)."""
from app.factory import create_app

__all__ = ["create_app"]
