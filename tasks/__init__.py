"""Celery: the app object (``celery -A tasks``), one module per queue."""
from tasks.app import celery

__all__ = ["celery"]
