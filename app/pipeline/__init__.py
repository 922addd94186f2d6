"""Plain functions behind the Celery tasks (callable without a broker)."""
