"""A case's result (its figures, checks and notes) and the table ``scripts/faults`` prints."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

RECOVERY_BOUND = 120.0  # seconds: after any kill or restart everything stored within 2 minutes


@dataclass
class Result:
    """The figures of one case (a plain dict through pytest's ``record_property``)."""

    case: str
    title: str
    engine: str = "server"
    broker: str = "redis"
    overrides: str = "none"
    sent: int = 0
    acked: int = 0
    stored: int = 0
    forwarded: int = 0
    missing_ch: int = 0
    missing_ufse: int = 0
    repeated: int = 0
    restores: int = 0
    recovery_s: float | None = None  # seconds from the fault's end until stored again (chDB: delivered)
    bound: float | None = RECOVERY_BOUND  # the most recovery_s may be (None: no bound, only recovered)
    delivered_s: float | None = None  # every acknowledged event at UFSE
    seconds: float = 0.0
    checks: list = field(default_factory=list)  # (name, ok, detail)
    notes: list = field(default_factory=list)
    error: str = ""
    na: str = ""  # why the case does not apply to this engine (shown, not counted as a failure)

    def check(self, name: str, ok, detail: str = "") -> bool:
        """Record one case-specific check (all are recorded; the case fails if any failed)."""
        self.checks.append((name, bool(ok), detail))
        return bool(ok)

    @property
    def ok(self) -> bool:
        recovered = self.recovery_s is not None and (self.bound is None or self.recovery_s <= self.bound)
        return bool(self.na) or (not self.error and self.missing_ch == 0 and self.missing_ufse == 0 and recovered
                                 and all(ok for _, ok, _ in self.checks))

    def asdict(self) -> dict:
        return asdict(self)


HEAD = ("case", "engine", "broker", "sent", "acked", "stored", "forwarded", "miss CH", "miss UFSE",
        "repeated", "restores", "stored again s", "delivered s", "result")


def _s(v: float | None) -> str:
    return "never" if v is None else f"{v:.1f}"


def table(results: list[Result]) -> str:
    """The per-case table, then each case's overrides, checks and notes."""
    rows = [HEAD] + [tuple(str(c) for c in (
        r.case, r.engine, r.broker, r.sent, r.acked, r.stored, r.forwarded, r.missing_ch, r.missing_ufse,
        r.repeated, r.restores, _s(r.recovery_s), _s(r.delivered_s), "n/a" if r.na else "PASS" if r.ok else "FAIL"))
        for r in results]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEAD))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for r in results:
        lines.append(f"\ncase {r.case} ({r.engine}, {r.broker}): {r.title} "
                     f"[{r.seconds:.0f}s; overrides: {r.overrides}]")
        lines += [f"  not applicable: {r.na}"] if r.na else []
        lines += [f"  ERROR {r.error}"] if r.error else []
        lines += [f"  {'ok  ' if ok else 'FAIL'} {name}" + (f": {d}" if d else "") for name, ok, d in r.checks]
        lines += [f"  note: {n}" for n in r.notes]
    return "\n".join(lines)
