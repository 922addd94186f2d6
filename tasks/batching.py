"""celery-batches with a stricter ack: a buffered message is acked only if its flush succeeded.

Stock celery-batches acks acks_late requests when the flush *returns*, even after an
exception. Here the flush must return True; anything else requeues every message of the
flush, so a batch is never acked before the INSERT holding its events returned.
"""
from __future__ import annotations

from typing import Any, Collection

from celery_batches import Batches, SimpleRequest
from celery_batches.trace import apply_batches_task


class AckOnSuccessBatches(Batches):
    """Batches task whose messages are acked on success and requeued otherwise."""

    def flush(self, requests: Collection[Any]) -> Any:
        serializable = ([SimpleRequest.from_request(r) for r in requests],)

        def on_return(result: Any) -> None:
            for req in requests:
                if result is True:
                    req.acknowledge()
                else:
                    req.reject(requeue=True)

        return self._pool.apply_async(apply_batches_task, (self, serializable, 0, None), callback=on_return)
