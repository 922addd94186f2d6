"""Observer: frontend-observability ingest pipeline (web process and shared core)."""
from app.web.factory import create_app

__all__ = ["create_app"]
