"""devtools.bench.result: the result file's shape, strict JSON, and reading it back (pure logic)."""
from __future__ import annotations

import json
import math

from devtools.bench.result import SCHEMA, dumps, read, shape_problems, write
from devtools.bench.stats import median_of

NAN = float("nan")


def _run(eps=1000.0):
    return {
        "e2e": {"accepted_eps": eps, "stored_eps_during_load": eps, "e2e_eps": eps, "catchup_s": 0.5},
        "latency": {"target_eps": 0.7 * eps, "achieved_eps": 0.7 * eps, "p50_ms": 5.0, "p99_ms": NAN},
        "queryable": {"p50_s": 0.5, "p95_s": 0.9, "probes": 10},
        "inserts": {"source": "system.part_log", "window_s": 19.0, "tables": {"events": {"rows_per_insert": 1e3}}},
        "delivery": {"idle_timeout_s": 5.0, "sessions": 96, "p50_s": 3.0, "p95_s": 4.0},
        "redis": {"sessions": 100000, "bytes_per_session": 600.0, "kinds": {}, "markers": {}},
        "baseline": {"best": {}, "observer_settings": {}, "faster_eps": 5 * eps, "ratio": 0.2},
        "cpu_per_1k_events": {"web": 0.1},
        "scrub": {"plain_ms": 20.0, "worst_ms": 40.0, "worst_shape": "ips", "ratio": 2.0, "shapes": {"ips": 40.0}},
    }


def _doc(runs):
    return {"schema": SCHEMA, "started_at": "2026-12-01T00:00:00Z", "duration_s": 1.0, "machine": {},
            "config": {}, "runs": runs, "median": median_of(runs)}


def test_a_complete_document_has_no_shape_problems():
    assert shape_problems(_doc([_run(), _run(2000.0)])) == []


def test_missing_groups_and_figures_are_named():
    run = _run()
    del run["latency"]["p99_ms"]
    del run["delivery"]
    problems = shape_problems(_doc([run]))
    assert "runs[0].latency.p99_ms missing" in problems
    assert "runs[0].delivery missing" in problems
    assert "median.delivery missing" in problems
    assert shape_problems({"schema": SCHEMA}) == [f"missing {k!r}" for k in
                                                  ("started_at", "duration_s", "machine", "config", "runs", "median")]
    assert shape_problems([]) == ["the document is not an object"]
    assert "'runs' must be a non-empty list" in shape_problems({**_doc([_run()]), "runs": []})


def test_written_json_is_strict_and_nan_comes_back(tmp_path):
    doc = _doc([_run()])
    text = dumps(doc)
    parsed = json.loads(text)  # would fail on a bare NaN
    assert parsed["runs"][0]["latency"]["p99_ms"] is None
    path = write(doc, tmp_path / "sub" / "result.json")
    back = read(path)
    assert math.isnan(back["runs"][0]["latency"]["p99_ms"])
    assert math.isnan(back["median"]["latency"]["p99_ms"])
    assert back["runs"][0]["e2e"]["e2e_eps"] == 1000.0
    assert shape_problems(back) == []
