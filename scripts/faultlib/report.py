"""A case's result and the table ``scripts/faults`` prints."""
from __future__ import annotations

from dataclasses import dataclass, field

RECOVERY_BOUND = 120.0  # seconds: after any kill or restart everything stored within 2 minutes


@dataclass
class Result:
    """The figures of one case."""

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
    recovery_s: float | None = None
    seconds: float = 0.0
    checks: list = field(default_factory=list)  # (name, ok, detail)
    notes: list = field(default_factory=list)
    error: str = ""
    na: str = ""  # why the case does not apply to this engine (shown, not counted as a failure)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        """Record one case-specific check."""
        self.checks.append((name, bool(ok), detail))
        return ok

    @property
    def ok(self) -> bool:
        if self.na:
            return True
        recovered = self.recovery_s is not None and self.recovery_s <= RECOVERY_BOUND
        return (not self.error and self.missing_ch == 0 and self.missing_ufse == 0 and recovered
                and all(ok for _, ok, _ in self.checks))


HEAD = ("case", "engine", "broker", "sent", "acked", "stored", "forwarded", "miss CH", "miss UFSE",
        "repeated", "restores", "recovered s", "result")


def row(r: Result) -> tuple:
    rec = "never" if r.recovery_s is None else f"{r.recovery_s:.1f}"
    return (r.case, r.engine, r.broker, r.sent, r.acked, r.stored, r.forwarded, r.missing_ch, r.missing_ufse,
            r.repeated, r.restores, rec, "n/a" if r.na else "PASS" if r.ok else "FAIL")


def table(results: list[Result]) -> str:
    """The per-case table, then each case's overrides, checks and notes."""
    rows = [HEAD] + [tuple(str(c) for c in row(r)) for r in results]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEAD))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for r in results:
        lines.append(f"\ncase {r.case} ({r.engine}, {r.broker}): {r.title} "
                     f"[{r.seconds:.0f}s; overrides: {r.overrides}]")
        if r.na:
            lines.append(f"  not applicable: {r.na}")
        if r.error:
            lines.append(f"  ERROR {r.error}")
        for name, ok, detail in r.checks:
            lines.append(f"  {'ok  ' if ok else 'FAIL'} {name}" + (f": {detail}" if detail else ""))
        lines.extend(f"  note: {n}" for n in r.notes)
    return "\n".join(lines)
