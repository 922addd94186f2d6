"""The ingest journal: every accepted batch is written down before its message is published.

Why: kombu's Redis transport consumes with BRPOP, which removes the message from the queue
before the worker records it as unacked (a second command). A broker killed between the two,
or a worker's warm shutdown that drops a BRPOP reply still in its socket buffer (celery
#4354), loses the message although the broker had it on disk (kombu #305). The API already
answered 202, so Observer keeps its own copy until the batch is counted into its sessions.

- ``write`` (web, before the publish): the batch (zlib-compressed msgpack) and its receive time.
- ``settle`` (the events flush, once its batches are counted into their sessions): the entry is dropped.
- ``overdue`` (maintenance sweep): entries older than the grace period while the ``events``
  and ``sessions`` queues are empty cannot still be waiting anywhere (a held message is
  restored within the visibility timeout); they are re-published and re-stamped, so each is
  re-published at most once per grace period. Downstream steps are idempotent (event-level
  dedup, per-batch session markers), so a batch published twice still counts once.

Entries expire after the dedup window in any case. The journal lives on the broker's Redis
(it guards that server's messages; it shares its persistence and its ``maxmemory``, so a
full broker refuses the journal write too and the API answers 503). With RabbitMQ, which
acks for real, there is no journal. Keys are sharded over hash tags ``{jN}`` so a Redis
Cluster spreads them; each call touches one slot.
"""
from __future__ import annotations

import base64
import json
import logging
import zlib
from typing import TYPE_CHECKING, cast

import msgpack

from app.storage import redis_keys
from app.storage.redis_clients import RedisClient

if TYPE_CHECKING:
    from app.settings import Settings

log = logging.getLogger(__name__)
SHARDS = 16


def _shard(batch_id: str) -> int:
    return zlib.crc32(batch_id.encode()) % SHARDS


def _encode(batch: dict) -> str:
    """zlib-compressed msgpack ("m:" + base64: the shared Redis clients decode replies as UTF-8);
    JSON for what msgpack cannot encode (lone surrogates)."""
    try:
        return "m:" + base64.b64encode(zlib.compress(msgpack.packb(batch), 1)).decode("ascii")
    except (UnicodeEncodeError, TypeError, ValueError):
        raw = json.dumps(batch, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")
        return base64.b64encode(zlib.compress(raw, 1)).decode("ascii")


def _decode(blob: str) -> dict:
    """Either form ``_encode`` writes: msgpack, or JSON for what msgpack cannot encode."""
    batch: dict
    if blob.startswith("m:"):
        batch = msgpack.unpackb(zlib.decompress(base64.b64decode(blob[2:])), raw=False)
    else:
        batch = json.loads(zlib.decompress(base64.b64decode(blob)).decode("utf-8", "surrogatepass"))
    return batch


class Journal:
    """The journal on one Redis and key prefix."""

    def __init__(self, redis: RedisClient, prefix: str, ttl_s: int) -> None:
        self.r = redis
        self.prefix = prefix
        self.ttl = int(ttl_s)

    def _keys(self, shard: int) -> tuple[str, str]:
        return redis_keys.journal_index(self.prefix, shard), redis_keys.journal_body_prefix(self.prefix, shard)

    def write(self, batch: dict) -> None:
        """Record ``batch`` (raises when Redis cannot take it: the API then answers 503)."""
        index, body = self._keys(_shard(batch["batch_id"]))
        blob = _encode(batch)
        pipe = self.r.pipeline(transaction=True)
        pipe.set(body + batch["batch_id"], blob, ex=self.ttl)
        pipe.zadd(index, {batch["batch_id"]: int(batch["received_at"])})
        pipe.expire(index, self.ttl)
        pipe.execute()

    def settle(self, batch_id: str) -> None:
        """The batch is counted into its sessions: forget it."""
        index, body = self._keys(_shard(batch_id))
        pipe = self.r.pipeline(transaction=True)
        pipe.zrem(index, batch_id)
        pipe.delete(body + batch_id)
        pipe.execute()

    def settle_many(self, batch_ids: list[str]) -> None:
        """settle() for many batches in one round trip (each entry's two keys share a slot)."""
        pipe = self.r.pipeline(transaction=False)
        for batch_id in batch_ids:
            index, body = self._keys(_shard(batch_id))
            pipe.zrem(index, batch_id)
            pipe.delete(body + batch_id)
        pipe.execute()

    def overdue(self, older_than_ms: int, now_ms: int, limit: int = 500) -> list[dict]:
        """Entries written before ``older_than_ms``, re-stamped to ``now_ms``, with their batches."""
        out: list[dict] = []
        for shard in range(SHARDS):
            index, body = self._keys(shard)
            # The clients decode responses (app/storage/redis_clients.py): members and values are str.
            ids = cast(list[str], self.r.zrangebyscore(index, "-inf", older_than_ms, start=0,
                                                       num=max(0, limit - len(out))))
            for batch_id in ids:
                blob = cast("str | None", self.r.get(body + batch_id))
                if blob is None:  # expired body: nothing left to re-publish
                    self.r.zrem(index, batch_id)
                    continue
                self.r.zadd(index, {batch_id: now_ms}, xx=True)
                out.append(_decode(blob))
            if len(out) >= limit:
                break
        return out

    def size(self) -> int:
        """Entries not settled yet."""
        return sum(int(self.r.zcard(self._keys(s)[0])) for s in range(SHARDS))


def journal_for(settings: Settings) -> Journal | None:
    """The journal for these settings: on the Redis broker, None with RabbitMQ."""
    if not settings.celery_broker_url.startswith(("redis", "rediss", "unix")):
        return None
    from app.storage import redis_clients as redis_pool

    return Journal(redis_pool.client(settings.celery_broker_url), settings.redis_key_prefix, settings.dedup_window)


def settle_quietly(settings: Settings, batch_ids: list[str]) -> None:
    """The batches are counted: drop their journal entries. Best effort: a leftover entry is
    re-published once by the sweep and counts nothing (its batch markers say it was counted)."""
    journal = journal_for(settings)
    if journal is None or not batch_ids:
        return
    try:
        journal.settle_many(batch_ids)
    except Exception as exc:  # the broker's Redis away for a moment
        log.warning("journal settle failed", extra={"batches": len(batch_ids), "error": str(exc)[:200]})
