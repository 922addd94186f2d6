"""Worker heartbeats in Redis: written by each worker's main process, read by /ready and /metrics."""
from __future__ import annotations

import json
import time

from app.observability import metrics
from app.storage.redis import RedisClient


def heartbeat_key(prefix: str, name: str) -> str:
    """Redis key of one worker's heartbeat."""
    return f"{prefix}hb:worker:{name}"


def read_heartbeats(redis: RedisClient, prefix: str, stall_after: float, now: float | None = None) -> list[dict]:
    """Every live worker heartbeat, each with ``stalled`` set; updates observer_worker_stalled."""
    now = time.time() if now is None else now
    out = []
    for key in redis.scan_iter(match=heartbeat_key(prefix, "*"), count=500):
        raw = redis.get(key)
        if not raw:
            continue
        hb = json.loads(raw)
        hb["stalled"] = bool(hb.get("held")) and now - float(hb.get("last_progress") or 0) > stall_after
        metrics.STALLED.labels(hb["worker"]).set(1 if hb["stalled"] else 0)
        out.append(hb)
    return out
