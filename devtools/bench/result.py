"""The result file (``var/bench/result.json``): its shape, and writing and reading it.

One document per invocation: how it ran (machine, settings, overrides), every run's figures,
their medians and the verdicts. NaN (a figure that could not be measured) is written as
``null`` so the file is strict JSON, and read back as NaN.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

SCHEMA = "observer-bench/1"

# The figure groups every run carries (numbers inside may be null when not measured).
FIGURE_GROUPS = {
    "e2e": ("accepted_eps", "stored_eps_during_load", "e2e_eps", "catchup_s"),
    "latency": ("target_eps", "achieved_eps", "p50_ms", "p99_ms"),
    "queryable": ("p50_s", "p95_s", "probes"),
    "inserts": ("source", "window_s", "tables"),
    "delivery": ("idle_timeout_s", "sessions", "p50_s", "p95_s"),
    "redis": ("sessions", "bytes_per_session", "kinds", "markers"),
    "baseline": ("best", "observer_settings", "faster_eps", "ratio"),
    "cpu_per_1k_events": (),
    "scrub": ("plain_ms", "worst_ms", "worst_shape", "ratio", "shapes"),
}
TOP_LEVEL = ("schema", "started_at", "duration_s", "machine", "config", "runs", "median")


def shape_problems(doc: Any) -> list[str]:
    """What is missing or mistyped in a result document ([] when it is well formed)."""
    if not isinstance(doc, dict):
        return ["the document is not an object"]
    problems = [f"missing {k!r}" for k in TOP_LEVEL if k not in doc]
    if doc.get("schema") not in (None, SCHEMA):
        problems.append(f"schema {doc.get('schema')!r} is not {SCHEMA!r}")
    runs = doc.get("runs")
    if runs is not None and (not isinstance(runs, list) or not runs):
        problems.append("'runs' must be a non-empty list")
        runs = []
    for where, figures in [("median", doc.get("median"))] + [(f"runs[{i}]", r) for i, r in enumerate(runs or [])]:
        if figures is not None and not isinstance(figures, dict):
            problems.append(f"{where} is not an object")
        elif figures is not None:
            for group, keys in FIGURE_GROUPS.items():
                g = figures.get(group)
                problems += ([f"{where}.{group}.{k} missing" for k in keys if k not in g] if isinstance(g, dict)
                             else [f"{where}.{group} missing"])
    return problems


def _map(obj: Any, leaf) -> Any:
    """``leaf`` applied to every value that is not a dict or list (tuples become lists, keys str)."""
    if isinstance(obj, dict):
        return {str(k): _map(v, leaf) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_map(v, leaf) for v in obj]
    return leaf(obj)


def dumps(doc: dict) -> str:
    """The document as strict, stable JSON (NaN and inf as null)."""
    clean = _map(doc, lambda v: None if isinstance(v, float) and not math.isfinite(v) else v)
    return json.dumps(clean, indent=1, sort_keys=True, allow_nan=False)


def write(doc: dict, path: Path) -> Path:
    """Write the document (directories created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(doc) + "\n")
    return path


def read(path: Path) -> dict:
    """Read a result file; ``null`` figures come back as NaN."""
    doc = json.loads(Path(path).read_text())
    for key in ("runs", "median"):
        if key in doc:
            doc[key] = _map(doc[key], lambda v: float("nan") if v is None else v)
    return doc
