"""What a case function gets: the rig, the running load, the scale and its result to fill."""
from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Ctx:
    rig: object
    load: object
    scale: object
    result: object
    excluded: set = field(default_factory=set)  # acked ids that must NOT be stored (poison)
    t_back: float | None = None  # when a downstream came back (case 10)
    extra: dict = field(default_factory=dict)

    def warmup(self) -> None:
        """Load without a fault first, so the workers hold buffered work when it strikes."""
        time.sleep(self.scale.warmup)

    def statuses(self) -> dict:
        """A copy of the status counts so far (to diff around a fault)."""
        return dict(self.load.stats.statuses)

    @staticmethod
    def delta(before: dict, after: dict) -> dict:
        return {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}

    def restart_all(self, procs) -> None:
        """Start the given Procs again together, then wait for each to be ready."""
        for p in procs:
            if p.alive():
                p.stop()
            else:
                p.kill_group()
                p.proc.wait()
            p.start(wait=False)
        for p in procs:
            p.wait_ready()
