"""A short retry a worker holds itself: the task re-publishes its message after ``seconds``."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Countdown:
    """Retry this message in ``seconds`` with these task keyword arguments.

    Only for waits well under the broker's visibility timeout (the worker holds the message
    unacked meanwhile); longer waits are parked in the due-time index (app/retry/due.py).
    """

    seconds: float
    kwargs: dict = field(default_factory=dict)
    #: what failed (Flower and the logs show it with the retry)
    cause: BaseException | None = None
