"""The issue's targets and the ``--check`` gate: each target PASS / MISS / n/a, and by how much.

A target reads one figure of the median result by its dotted path. The gate (exit status of
``scripts/bench --check``) is the issue's first three targets; the others are printed with the
same verdicts but do not decide the exit status. A figure that could not be measured is a MISS;
a per-table target whose table does not exist in the database is ``n/a`` (nothing to batch).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from devtools.bench.stats import NAN, fmt, isnum

PASS, MISS, NA = "PASS", "MISS", "n/a"
_ABSENT = object()


@dataclass(frozen=True)
class Target:
    """One target: ``path`` in the figures, compared with ``op`` ('>=' or '<=') to ``bound``."""

    path: str
    label: str
    op: str
    bound: float
    unit: str = ""
    gate: bool = False
    digits: int = 1
    table: str = ""  # per-table target: n/a when the table does not exist


@dataclass(frozen=True)
class Verdict:
    target: Target
    value: float
    status: str
    detail: str

    @property
    def line(self) -> str:
        t = self.target
        return (f"{self.status:<4}  [{'gate' if t.gate else 'info'}] {t.label}: {fmt(self.value, t.digits, t.unit)} "
                f"(target {t.op} {fmt(t.bound, t.digits, t.unit)}) {self.detail}").rstrip()


def _table_targets(table: str) -> list[Target]:
    return [Target(f"inserts.tables.{table}.rows_per_insert", f"{table}: rows per INSERT at full load", ">=", 1000,
                   gate=True, digits=0, table=table),
            Target(f"inserts.tables.{table}.inserts_per_s", f"{table}: INSERTs per second at full load", "<=", 2,
                   " /s", gate=True, digits=2, table=table)]


TARGETS: list[Target] = [
    Target("baseline.ratio", "end-to-end events/s as a ratio of the baseline", ">=", 0.15, "x", gate=True, digits=3),
    Target("latency.p99_ms", "p99 ingest latency, 50-event batch at 70% of sustained", "<=", 25, " ms", gate=True),
    *_table_targets("events"),
    *_table_targets("session_batches"),
    Target("scrub.ratio", "ingest CPU per request, worst-case scrub body / plain body of the same size", "<=", 3,
           "x", gate=True, digits=2),
    Target("baseline.ratio", "end-to-end ratio, stretch", ">=", 0.25, "x", digits=3),
    Target("scrub.tail.ratio", "ingest CPU per request with one client tailing / no one tailing", "<=", 1.25, "x",
           digits=2),
    Target("queryable.p95_s", "accepted -> queryable p95", "<=", 2, " s", digits=2),
    Target("delivery.sessions_rows_per_insert", "sessions rows per INSERT (batched, delivery phase)", ">=", 2,
           digits=1, table="sessions"),
    Target("delivery.p95_s", "idle timeout -> delivered at UFSE p95", "<=", 15, " s", digits=2),
    Target("redis.bytes_per_session", "Redis bytes per active session", "<=", 700, " B", digits=0),
    Target("redis.markers.mb_per_1k_eps", "dedup/batch markers per 1,000 events/s sustained", "<=", 200, " MB"),
]


def lookup(doc: Any, path: str) -> Any:
    """The value at a dotted path, or the private _ABSENT marker."""
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return _ABSENT
        doc = doc[part]
    return doc


def judge(target: Target, figures: dict) -> Verdict:
    """One verdict with the margin in the target's unit and as a ratio."""
    value, t = lookup(figures, target.path), target
    tables = lookup(figures, "inserts.tables")
    if t.table and isinstance(tables, dict) and tables and t.table not in tables:
        return Verdict(t, NAN, NA, f"(no table {t.table!r} in the database)")
    if not isnum(value):
        return Verdict(t, NAN, MISS, "(not measured)")
    value = float(value)
    if t.op not in (">=", "<="):
        raise ValueError(f"unknown operator {t.op!r}")
    ok = value >= t.bound if t.op == ">=" else value <= t.bound
    gap = fmt(abs(value - t.bound), t.digits, t.unit)
    if t.op == ">=":
        detail = (f"by {gap} ({value / t.bound:.2f}x the target)" if ok else
                  f"short by {gap} ({value / t.bound:.0%} of the target)")
    else:
        detail = f"with {gap} to spare" if ok else f"over by {gap} ({value / t.bound:.1f}x the target)"
    return Verdict(t, value, PASS if ok else MISS, detail)


def evaluate(figures: dict, targets: list[Target] = TARGETS) -> list[Verdict]:
    """Every target's verdict on ``figures`` (the median result)."""
    return [judge(t, figures) for t in targets]


def gate_passed(verdicts: list[Verdict]) -> bool:
    """True when no gate target is a MISS (n/a ones do not count)."""
    return all(v.status != MISS for v in verdicts if v.target.gate)


def as_json(verdicts: list[Verdict]) -> list[dict]:
    """The verdicts for the result file."""
    return [{"path": v.target.path, "label": v.target.label, "op": v.target.op, "bound": v.target.bound,
             "gate": v.target.gate, "value": v.value if isnum(v.value) else None, "status": v.status,
             "detail": v.detail} for v in verdicts]
