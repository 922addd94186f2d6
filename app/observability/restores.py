"""Broker restores counted: kombu's Redis transport gives a message back to its queue when it
stayed unacked past the visibility timeout (``QoS.restore_visible``). On a live worker that
means a message waited too long; after a crash it is the recovery. Either way it is counted
(``observer_broker_restores_total``) and logged ("broker restored unacked messages").
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from app.observability import metrics

log = logging.getLogger(__name__)
_local = threading.local()


def install_restore_counter() -> None:
    """Wrap kombu's visibility-timeout restore so each restored message is counted."""
    try:
        from kombu.transport import redis as kredis
    except ImportError:  # pragma: no cover - kombu always ships it
        return
    qos = kredis.QoS
    if getattr(qos, "_observer_wrapped", False):
        return
    original_visible, original_by_tag = qos.restore_visible, qos.restore_by_tag

    def restore_visible(self: kredis.QoS, *args: Any, **kwargs: Any) -> Any:
        _local.counting, _local.count = True, 0
        try:
            return original_visible(self, *args, **kwargs)
        finally:
            n, _local.counting = _local.count, False
            if n:
                metrics.BROKER_RESTORES.inc(n)
                log.warning("broker restored unacked messages", extra={"count": n})

    def restore_by_tag(self: kredis.QoS, tag: str, client: Any = None, leftmost: bool = False) -> Any:
        if getattr(_local, "counting", False):
            _local.count += 1
        return original_by_tag(self, tag, client, leftmost)

    # Patching the class is the point (kombu has no hook for restores); mypy sees methods.
    qos.restore_visible, qos.restore_by_tag = restore_visible, restore_by_tag  # type: ignore[method-assign]
    setattr(qos, "_observer_wrapped", True)  # noqa: B010 -- a marker kombu's class does not declare
