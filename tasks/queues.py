"""The queue Enum (defined with the publisher in app.broker so the web never imports tasks)."""
from app.broker import Queue

__all__ = ["Queue"]
