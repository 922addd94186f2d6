"""Structured logging: one JSON object per line with request/task ids bound from context."""
from __future__ import annotations

import json
import logging
import sys
import time

from app.observability.context import request_id_var, task_id_var

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Render records as JSON; ``extra=`` fields become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid, tid = request_id_var.get(), task_id_var.get()
        if rid:
            out["request_id"] = rid
        if tid:
            out["task_id"] = tid
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Human format for development, still showing the ids."""

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extras = {k: v for k, v in record.__dict__.items() if k not in _RESERVED and not k.startswith("_")}
        rid = request_id_var.get()
        if rid:
            extras["request_id"] = rid
        return base + (" " + " ".join(f"{k}={v}" for k, v in extras.items()) if extras else "")


def configure(level: str = "INFO", fmt: str = "json") -> None:
    """Install the formatter on the root logger (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    line = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(line))
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_observer", False):
            root.removeHandler(h)
    handler._observer = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
