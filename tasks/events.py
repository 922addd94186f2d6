"""Queue ``events``: batches -> ClickHouse (one INSERT per flush), then fan out to ``sessions``."""
from __future__ import annotations

import functools
import logging

from app.broker import Queue
from app.forwarding.backoff import backoff_delay
from app.observability import metrics
from app.pipeline.persist import persist_batches, session_summary
from app.storage import clickhouse_migrations
from tasks import runtime
from tasks.app import celery
from tasks.batching import AckOnSuccessBatches

log = logging.getLogger(__name__)
_s = runtime.settings()


@functools.lru_cache(maxsize=1)
def insert_settings() -> dict | None:
    """INSERT settings for this engine, probed once per process."""
    ch = runtime.clickhouse()
    # async_insert lets a server merge small INSERTs from many workers; wait_for_async_insert
    # keeps "the INSERT returned" meaning "the rows are written", which our ack relies on.
    if ch.kind == "server" and clickhouse_migrations.detect(ch).async_insert:
        return {"async_insert": 1, "wait_for_async_insert": 1}
    return None


@celery.task(base=AckOnSuccessBatches, name="events.persist", flush_every=_s.events_flush_every,
             flush_interval=_s.events_flush_interval, acks_late=True, reject_on_worker_lost=True)
def persist(requests) -> bool:
    """Store buffered batches in ClickHouse, then publish one sessions.update per batch."""
    batches = [(r.args[0], int((r.kwargs or {}).get("attempt", 0))) for r in requests]
    try:
        persist_batches(runtime.clickhouse(), runtime.sessions_redis(), prefix=_s.redis_key_prefix,
                        batches=[b for b, _a in batches], marker_ttl=_s.batch_marker_ttl,
                        insert_settings=insert_settings())
    except Exception as exc:
        log.error("events insert failed", extra={"error": f"{type(exc).__name__}: {exc}", "batches": len(batches)})
        metrics.TASK_FAILURES.labels("events.persist").inc()
        return _retry_or_dead_letter(batches, exc)
    for batch, _attempt in batches:
        send_session_update(batch)
    return True


def send_session_update(batch: dict) -> None:
    """Publish the session step of one stored batch."""
    celery.send_task("sessions.update", args=[session_summary(batch)], queue=Queue.SESSIONS.value,
                     headers={"request_id": batch.get("request_id", "")})


def _retry_or_dead_letter(batches: list[tuple[dict, int]], exc: Exception) -> bool:
    """Re-publish each batch with a delay (or dead-letter it); True once all are safe."""
    for batch, attempt in batches:
        if attempt + 1 >= _s.events_max_attempts:
            runtime.dead_letters().add("poison_batch", batch["batch_id"], {"batch": batch},
                                       f"{type(exc).__name__}: {exc}", attempt + 1, batch.get("request_id"))
            metrics.DEAD_LETTERS.labels("poison_batch").inc()
            continue
        # ClickHouse being down or overloaded is worth retrying; backoff keeps us from hammering it.
        delay = backoff_delay(attempt + 1, base=1.0, cap=min(300.0, _s.forward_backoff_max))
        celery.send_task("events.persist", args=[batch], kwargs={"attempt": attempt + 1},
                         queue=Queue.EVENTS.value, countdown=delay,
                         headers={"request_id": batch.get("request_id", "")})
    return True


@celery.task(name="events.replay_batch", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def replay_batch(dead_letter_id: int) -> None:
    """Re-publish a dead-lettered batch to events.persist."""
    dl = runtime.dead_letters().get(dead_letter_id)
    if dl is None or dl["replayed_at"] is not None:
        return
    batch = dl["payload"]["batch"]
    celery.send_task("events.persist", args=[batch], queue=Queue.EVENTS.value)
    runtime.dead_letters().mark_replayed(dead_letter_id)
